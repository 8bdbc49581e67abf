"""File helpers shared by every layer."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` (atomic on
    one file system), on failure removed. A crash never leaves a half-written ``path``. The file
    ends with the mode any other tool's output has (0666 less the umask), not the 0600 that
    ``mkstemp`` gives the temporary file."""
    path = Path(path)
    # The temporary name ends with the real name, so writers that choose a format by extension
    # (SimpleITK, PIL) still see ".nii.gz", ".png", ...
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
