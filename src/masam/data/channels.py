"""Cases with several channels (issue 15): nnU-Net's ``CASE_0000``, ``CASE_0001``, ... files read
into one :class:`Volume` (channel 0 its ``array``, the others its ``channels``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ImageReadError, InputError
from .io import VOLUME_SUFFIXES, read_volume
from .volume import Volume

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>" + "|".join(map(re.escape, VOLUME_SUFFIXES)) + ")$")


def read_channels(paths: list[str | os.PathLike]) -> Volume:
    """Channel files in channel order -> one Volume. A channel whose shape or geometry differs from
    channel 0's is refused (no silent resampling)."""
    first = read_volume(paths[0])
    if len(paths) == 1:
        return first
    if first.is_video or first.source is not None:
        raise ImageReadError(f"{paths[0]}: several channels are supported for volume files only")
    extra = []
    for index, path in enumerate(paths[1:], start=1):
        volume = read_volume(path)
        if not volume.same_geometry(first):
            raise ImageReadError(
                f"{path}: channel {index} differs from channel 0 ({paths[0]}) in shape or geometry: "
                f"{volume.array.shape} spacing {_r(volume.spacing)} origin {_r(volume.origin)} against "
                f"{first.array.shape} spacing {_r(first.spacing)} origin {_r(first.origin)}"
            )
        extra.append(volume.array)
    first.channels = tuple(extra)
    return first


def _r(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def channel_files(path: str | os.PathLike, channels: tuple[str, ...]) -> list[Path]:
    """The files of every channel of the case whose channel-0 file is ``path`` (``CASE_0000.nii.gz``
    -> ``CASE_0001.nii.gz``, ...). A model with one channel takes any file; with several, the
    case needs exactly those channels, else an InputError naming what is missing or extra."""
    path = Path(path)
    match = _CHANNEL.match(path.name)
    if match is None or path.is_dir():
        if len(channels) > 1:
            raise InputError(
                f"{path}: the model takes {len(channels)} channels {list(channels)}: give CASE_0000, CASE_0001"
                f"{', CASE_0002' if len(channels) > 2 else ''} files in a folder (nnU-Net naming)"
            )
        return [path]
    case, ending = match["case"], match["ending"]
    present = sorted(p for p in path.parent.glob(f"{glob_escape(case)}_[0-9][0-9][0-9][0-9]{ending}"))
    wanted = [path.parent / f"{case}_{i:04d}{ending}" for i in range(max(1, len(channels)))]
    missing = [p.name for p in wanted if not p.is_file()]
    extra = [p.name for p in present if p not in wanted]
    if missing or extra:
        problem = f"missing {missing}" if missing else f"has channel files the model does not take: {extra}"
        raise InputError(f"{path.parent / case}: the model takes {describe_channels(channels)}; {problem}")
    return wanted


def describe_channels(channels: tuple[str, ...]) -> str:
    """``1 channel (CT)``, ``2 channels (FLAIR, T1c)``; ``1 channel`` when its name is not known."""
    if len(channels) <= 1:
        return f"1 channel ({channels[0]})" if channels else "1 channel"
    return f"{len(channels)} channels ({', '.join(channels)})"


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
