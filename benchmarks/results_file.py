"""Writing a benchmark's result: the figures plus the machine they were taken on."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def write_result(path: str | os.PathLike, result: dict) -> None:
    """Add cpu count, machine and torch version, write ``path`` as JSON and print it."""
    result = {**result, "cpu_count": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
