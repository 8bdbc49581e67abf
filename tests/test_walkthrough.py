"""Issue 28: the README's commands as a new user runs them (``tools/walkthrough.py``), on the shared
BraTS cases and a DICOM study folder, each output and message checked by the script."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED, require_shared


@pytest.mark.slow
def test_the_readme_walkthrough_meets_every_check(tmp_path):
    require_shared(SHARED / "data" / "deepmedic_brats2015")
    require_shared(SHARED / "data" / "dicom" / "philips_ct_phantom")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "walkthrough.py"), str(tmp_path / "user"), "--shared", str(SHARED)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "walkthrough: every step met its checks"
    assert done.stdout.count("$ masam ") == 7
