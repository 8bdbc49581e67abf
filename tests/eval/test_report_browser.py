"""The report in a real browser: headless Chromium renders it, every embedded image decodes, and
the page logs no error. Skipped with a message where no Chromium is installed; CI must have one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.eval.test_report import build_report

WINDOW = (1000, 1400)

# Injected into a copy of the page, first thing in <head>: records load errors (images included,
# caught in the capture phase) and, once loaded, how many images there are and how many decoded.
CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.tagName))), true);
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  document.body.setAttribute('data-check', JSON.stringify({images: images.length, decoded: decoded.length,
    errors: window.__errors, height: document.documentElement.scrollHeight}));
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    message = "no Chromium installed (apt-get install chromium): the report's browser test cannot run"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_browser(browser: str, profile, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    browser = chromium()
    folder = tmp_path_factory.mktemp("browser")
    path, _ = build_report(folder)
    return browser, path, folder


def test_screenshot_has_the_window_size_and_is_not_blank(page):
    browser, path, folder = page
    shot = folder / "shot.png"
    result = run_browser(browser, folder / "profile1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                         f"--screenshot={shot}", path.as_uri())  # fmt: skip
    assert shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot)
    assert image.size == WINDOW
    grey = np.asarray(image.convert("L"), dtype=float)
    assert grey.std() > 10 and len(np.unique(grey)) > 50  # text, tables and plots, not one colour
    assert console_messages(result.stderr) == []


def test_every_image_decodes_without_errors(page):
    browser, path, folder = page
    text = path.read_text()
    checked = folder / "checked.html"
    checked.write_text(text.replace("<head>", "<head>" + CHECK, 1))
    result = run_browser(browser, folder / "profile2", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri())
    found = re.search(r'data-check="([^"]*)"', result.stdout)
    assert found, f"the check did not run: {result.stderr[-2000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"'))
    expected = text.count("<img ")
    assert check["images"] == expected > 5
    assert check["decoded"] == expected
    assert check["errors"] == []
    assert check["height"] > WINDOW[1]  # the whole report laid out, not an empty page
    assert console_messages(result.stderr) == []
