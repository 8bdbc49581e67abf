"""Issue 28: a shared CPU. ``--threads``/``MASAM_THREADS`` on every command that computes, a
default that fits the cores the process may use, and a warning when the cores are already busy."""

from __future__ import annotations

import os

import pytest
import torch

from masam import threads
from masam.cli import COMMANDS, build_parser, main
from masam.errors import ConfigError
from masam.threads import ThreadConfig, busy_warning, default_workers, resolve_threads

COMPUTING = ("preprocess", "predict", "evaluate", "ensemble", "postprocess", "report", "check", "train", "demo")


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})


@pytest.fixture
def keep_threads():
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


def test_the_default_fits_threads_and_workers_within_the_cores(two_cores):
    assert default_workers() == 1 and default_workers(1) == 0 and default_workers(16) == 2
    assert resolve_threads(None, workers=default_workers(), environ={}) == 1  # 1 worker + 1 thread on 2 cores
    assert resolve_threads(None, workers=0, environ={}) == 2
    assert resolve_threads(None, workers=5, environ={}) == 1
    assert resolve_threads(None, workers=0, environ={"LOCAL_WORLD_SIZE": "2"}) == 1  # torchrun: a core per rank


def test_threads_come_from_the_option_then_the_environment(two_cores):
    assert resolve_threads(3, environ={"MASAM_THREADS": "1"}) == 3
    assert resolve_threads(None, environ={"MASAM_THREADS": "4"}) == 4
    assert resolve_threads(None, environ={"MASAM_THREADS": "4", "OMP_NUM_THREADS": "1"}) == 4
    assert resolve_threads(None, workers=1, environ={"OMP_NUM_THREADS": "1"}) == 1  # as torch would read it
    assert resolve_threads(None, workers=0, environ={"OMP_NUM_THREADS": "3"}) == 3
    with pytest.raises(ConfigError, match=r"^MASAM_THREADS=two: not a whole number of threads$"):
        resolve_threads(None, environ={"MASAM_THREADS": "two"})
    with pytest.raises(ConfigError, match=r"^--threads: at least 1 thread, got 0$"):
        resolve_threads(0, environ={})


def test_busy_cores_give_a_warning_and_idle_ones_none():
    assert busy_warning(2, cores=2, load=0.1) is None
    assert busy_warning(1, cores=2, load=1.0) is None  # one core left for one thread
    warning = busy_warning(2, cores=2, load=1.1)
    assert warning.startswith("the load average is 1.1 on 2 core(s): other processes are computing")
    assert "about 1 idle (choose with --threads)" in warning


def test_every_command_that_computes_has_threads_and_the_cli_applies_them(keep_threads, monkeypatch, capsys):
    assert [name for name, (_, classes, _) in COMMANDS.items() if ThreadConfig in classes] == list(COMPUTING)
    parser = build_parser()
    for name in COMPUTING:
        assert "--threads N" in parser._subparsers._group_actions[0].choices[name].format_help()
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    monkeypatch.setenv("MASAM_THREADS", "3")
    assert main(["check", "-d", "/nonexistent/dataset", "--threads", "1"]) == 1
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("masam check: warning: the load average is 3.0 on")
    main(["check", "-d", "/nonexistent/dataset"])
    assert torch.get_num_threads() == 3  # MASAM_THREADS without --threads
