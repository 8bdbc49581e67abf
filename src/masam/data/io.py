"""Reading and writing images with their geometry: volumes through SimpleITK (NIfTI, NRRD,
MHA/MHD, ...) and video sequences as folders of frames through Pillow."""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from ..errors import ImageReadError, MissingFileError
from ..fileio import atomic_path
from .volume import Volume

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


def has_suffix(path: str | os.PathLike, suffixes: tuple[str, ...]) -> bool:
    return str(path).lower().endswith(suffixes)


def strip_suffix(name: str) -> str:
    for suffix in VOLUME_SUFFIXES + FRAME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_volume(path: str | os.PathLike) -> Volume:
    """A 3D scalar image; for a folder, a video sequence (frames) or a DICOM series (the folder must
    hold exactly one; ``masam.data.dicom.read_series`` picks one of several)."""
    path = Path(path)
    if path.is_dir():
        if has_suffix(path.name, VOLUME_SUFFIXES):
            raise ImageReadError(f"{path}: is a folder, named like an image file")
        if not list_frames(path):
            from .dicom import is_dicom_folder, read_series  # dicom builds on this module

            if is_dicom_folder(path):
                return read_series(path)
        return read_frames(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        reason = _first_line(err)
        raise ImageReadError(
            f"{path}: cannot be read as an image (truncated or not an image file?): {reason}"
        ) from None
    if has_suffix(path, (".nii", ".nii.gz")):
        _check_nifti_complete(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected one")
    if image.GetDimension() != 3:
        raise ImageReadError(f"{path}: is a {image.GetDimension()}D image; expected a 3D volume")
    try:
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as err:
        raise ImageReadError(f"{path}: voxel data cannot be read (truncated?): {_first_line(err)}") from None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageReadError(f"{path}: contains NaN or infinite voxel values")
    return Volume(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), path)


def _check_nifti_complete(path: Path) -> None:
    """ITK's NIfTI reader fills missing voxel data with zeros and reads NaN as 0; a cut-off download
    or corrupt values must fail instead. Checks the bytes present against the header's data offset
    + dims x bitpix, and float data for NaN/Inf."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            content = f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise ImageReadError(f"{path}: truncated or corrupt compressed data: {err}") from None
    for endian in "<>":
        if len(content) < 4:
            break
        (sizeof_hdr,) = struct.unpack(endian + "i", content[:4])
        if sizeof_hdr == 348 and len(content) >= 348:
            dims = struct.unpack(endian + "8h", content[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", content[70:74])
            offset = int(struct.unpack(endian + "f", content[108:112])[0])
            break
        if sizeof_hdr == 540 and len(content) >= 540:
            datatype, bitpix = struct.unpack(endian + "2h", content[12:16])
            dims = struct.unpack(endian + "8q", content[16:80])
            (offset,) = struct.unpack(endian + "q", content[168:176])
            break
    else:
        raise ImageReadError(f"{path}: not a NIfTI file (no valid header)")
    voxels = 1
    for n in dims[1 : 1 + max(0, min(int(dims[0]), 7))]:
        voxels *= max(int(n), 1)
    start = max(offset, sizeof_hdr)
    expected = start + voxels * bitpix // 8
    if len(content) < expected:
        raise ImageReadError(f"{path}: truncated: {len(content)} bytes of header and data, the header needs {expected}")
    float_types = {16: "f4", 64: "f8"}
    if datatype in float_types:
        data = np.frombuffer(content, endian + float_types[datatype], count=voxels, offset=start)
        if not np.isfinite(data).all():
            raise ImageReadError(f"{path}: contains NaN or infinite voxel values")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def list_frames(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if has_suffix(p.name, FRAME_SUFFIXES)), key=_natural_key)


def case_name(filename: str, channel_suffix: bool = True) -> str | None:
    """The case name of an image file: its suffix stripped and, with ``channel_suffix``, nnU-Net's
    channel suffix ``_0000`` dropped; None for the files of other channels (``_0001``, ...)."""
    stem = strip_suffix(filename)
    if not channel_suffix:
        return stem
    if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
        return stem[:-5] if stem[-4:] == "0000" else None
    return stem


def scan_cases(folder: str | os.PathLike, channel_suffix: bool = True) -> dict[str, Path]:
    """The cases in a folder, by name in name order: volume files and frame folders (PNG and JPG
    frames). The one scanner of ``masam predict`` and ``masam evaluate``; ``channel_suffix``: image
    files named ``CASE_0000.nii.gz`` (nnU-Net), not label files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: no such folder")
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and has_suffix(entry.name, VOLUME_SUFFIXES):
            name = case_name(entry.name, channel_suffix)
            if name is not None:
                found[name] = entry
        elif entry.is_dir() and (list_frames(entry) or has_suffix(entry.name, VOLUME_SUFFIXES)):
            # a folder named like an image file is kept, so that reading it says "is a folder"
            found[case_name(entry.name, channel_suffix) or entry.name] = entry
    return found


def read_frames(folder: str | os.PathLike, label: bool = False) -> Volume:
    """A folder of frames as ``[t, y, x, 3]`` uint8 (images) or ``[t, y, x]`` (label PNGs holding
    class indices), frames in natural name order."""
    folder = Path(folder)
    frames = list_frames(folder)
    if not frames:
        raise ImageReadError(f"{folder}: no .png or .jpg frames")
    arrays = []
    for frame in frames:
        try:
            with Image.open(frame) as im:
                if not label:
                    arrays.append(np.asarray(im.convert("RGB")))
                elif im.mode in ("P", "L", "1", "I", "I;16"):
                    # the stored values are the class indices (for palette PNGs: the palette indices)
                    arrays.append(np.asarray(im).astype(np.int32))
                else:
                    raise ImageReadError(
                        f"{frame}: a label frame must hold class indices in one channel, not {im.mode}"
                    )
        except OSError as err:
            raise ImageReadError(f"{frame}: cannot be read as an image: {err}") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ImageReadError(f"{folder}: frames differ in size: {sorted(shapes)}")
    return Volume(
        np.stack(arrays), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), folder, is_video=True
    )


def read_label(path: str | os.PathLike, image: Volume | None = None) -> Volume:
    """A label map (integer class indices), checked against its image when given."""
    path = Path(path)
    label = read_frames(path, label=True) if path.is_dir() else read_volume(path)
    array = label.array
    if array.dtype.kind == "f":
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ImageReadError(f"{path}: label values are not integers")
    if array.min() < 0:
        raise ImageReadError(f"{path}: negative label values")
    label.array = array.astype(np.uint8 if array.max() < 256 else np.int32)
    if image is not None:
        got, want = list(label.array.shape[:3]), list(image.array.shape[:3])
        if got != want:
            # issue 28: sizes in (x, y, z), the order masam check's summary and ITK use
            raise ImageReadError(f"{path}: label size (x, y, z) {got[::-1]} differs from the image's {want[::-1]}")
        if not image.is_video and not label.same_geometry(image):
            raise ImageReadError(f"{path}: label geometry (spacing, origin or direction) differs from its image's")
    return label


def write_label(path: str | os.PathLike, array: np.ndarray, reference: Volume) -> Path:
    """Write a label map with the geometry of ``reference``: a volume file (format from the
    extension) or, for video references, a folder of PNG frames. Written atomically."""
    path = Path(path)
    if reference.is_video:
        path.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(array):
            with atomic_path(path / f"{i:05d}.png") as tmp:
                Image.fromarray(frame.astype(np.uint8)).save(tmp, format="PNG")
        return path
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(reference.spacing)
    image.SetOrigin(reference.origin)
    image.SetDirection(reference.direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path


def slice_axis(volume: Volume) -> int:
    """The numpy axis to take slices along: the through-plane axis, i.e. the largest spacing;
    among equal spacings the axis closest to the patient's head-foot (axial) direction. Video:
    time (axis 0)."""
    if volume.is_video:
        return 0
    spacing = np.asarray(volume.spacing)
    direction = np.asarray(volume.direction).reshape(3, 3)
    candidates = np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-3))
    sitk_axis = max(candidates, key=lambda i: abs(direction[2, i]))
    return 2 - int(sitk_axis)


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" in line.upper() or "exception" in line.lower()]
    return (useful or lines or [type(err).__name__])[-1][:300]
