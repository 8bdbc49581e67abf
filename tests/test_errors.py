"""One error base class: the CLI prints MasamError as one line, anything else keeps its traceback."""

from __future__ import annotations

import pytest
import torch

import masam.cli as cli
from masam.data import DatasetError, ImageReadError
from masam.device import is_out_of_memory
from masam.errors import CheckpointError, ConfigError, DeviceError, MasamError, MissingFileError, TrainingError


def test_every_package_error_is_a_masam_error_and_keeps_its_old_base():
    for cls, old in ((CheckpointError, ValueError), (DatasetError, ValueError), (ImageReadError, ValueError),
                     (TrainingError, RuntimeError), (ConfigError, ValueError), (DeviceError, RuntimeError),
                     (MissingFileError, FileNotFoundError)):  # fmt: skip
        assert issubclass(cls, MasamError) and issubclass(cls, old)


def _failing(error):
    def handler(args):
        raise error

    return handler


def test_cli_prints_package_errors_in_one_line_and_lets_bugs_through(monkeypatch, capsys):
    help_text, classes, _ = cli.COMMANDS["params"]
    monkeypatch.setitem(cli.COMMANDS, "params", (help_text, classes, _failing(ConfigError("x.json: bad value"))))
    assert cli.main(["params"]) == 1
    assert capsys.readouterr().err == "masam params: error: x.json: bad value\n"
    monkeypatch.setitem(cli.COMMANDS, "params", (help_text, classes, _failing(ValueError("shape bug"))))
    with pytest.raises(ValueError, match="shape bug"):
        cli.main(["params"])


def test_out_of_memory_is_recognised_by_type_or_the_cpu_allocators_message():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate"
                                         " memory: you tried to allocate 4611686018427387904 bytes"))  # fmt: skip
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
