"""How many CPU threads a command computes with (issue 28: a shared machine).

Two torch processes on two cores, each with its default OpenMP threads and loader workers, slow
each other down about 30x; one thread each runs at full one-core speed. So the default fits the
cores this process may use (``os.sched_getaffinity``): loader workers first, torch threads for
the rest. ``--threads N`` or ``MASAM_THREADS=N`` chooses, and a command warns at start when the
load average shows the cores already busy. Imports nothing from the package but the settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError
from .options import setting

ENV = "MASAM_THREADS"


@dataclass
class ThreadConfig:
    """The ``--threads`` option of every command that computes."""

    threads: int | None = setting(
        None, f"CPU threads to compute with (torch, OpenMP); the environment variable {ENV} sets it too",
        "runtime", metavar="N", default_text="the cores this process may use, less its loader workers",
    )  # fmt: skip


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(cores: int | None = None) -> int:
    """Loader workers when none are given: 2, but at most the cores less one (one for the model)."""
    cores = available_cores() if cores is None else cores
    return max(0, min(2, cores - 1))


def loader_workers(given: int | None) -> int:
    """The loader workers to start: ``given``, else :func:`default_workers`."""
    return default_workers() if given is None else given


def resolve_threads(given: int | None, workers: int = 0, environ: dict | None = None) -> int:
    """``--threads`` if given, else ``MASAM_THREADS``, else ``OMP_NUM_THREADS`` (as torch itself
    would), else this process's share of the cores (under torchrun, the cores divided among the
    processes of this machine) less ``workers``, at least 1."""
    environ = os.environ if environ is None else environ
    where = "--threads"
    if given is None and environ.get(ENV, "").strip():
        where = f"{ENV}={environ[ENV]}"
        try:
            given = int(environ[ENV])
        except ValueError:
            raise ConfigError(f"{where}: not a whole number of threads") from None
    if given is None and environ.get("OMP_NUM_THREADS", "").strip().isdigit():  # the user's (or torchrun's) choice
        given = int(environ["OMP_NUM_THREADS"])
    if given is None:
        local = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1))  # set by torchrun
        return max(1, available_cores() // local - workers)
    if given < 1:
        raise ConfigError(f"{where}: at least 1 thread, got {given}")
    return given


def busy_warning(wanted: int, cores: int | None = None, load: float | None = None) -> str | None:
    """A sentence when the 1-minute load average leaves fewer idle cores than ``wanted`` (threads
    plus loader workers), None otherwise."""
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    idle = cores - load
    if load < 0.75 or idle >= wanted - 0.25:
        return None
    fits = max(1, int(idle + 0.25))
    return (
        f"the load average is {load:.1f} on {cores} core(s): other processes are computing, so this will be "
        f"slower than usual; {wanted} thread(s) and workers wanted, about {fits} idle (choose with --threads)"
    )


def apply_threads(threads: int) -> None:
    """Set torch's threads and OMP_NUM_THREADS (for processes started from this one)."""
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
