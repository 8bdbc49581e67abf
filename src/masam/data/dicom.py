"""DICOM series (one file per slice) as volumes.

Headers are read with pydicom to group files by SeriesInstanceUID, sort each series by position
along the slice normal (never by file name) and refuse series whose geometry a volume cannot
represent; the voxels are then read with SimpleITK's GDCM series reader in that order, so the
geometry is the one ITK gives and rescale slope/intercept are applied.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from ..errors import ImageReadError
from .volume import Volume

SPACING_TOLERANCE = 0.05
"""Largest deviation of one slice gap from the median gap, as a fraction of the median."""
TILT_TOLERANCE = 0.1
"""Largest in-plane offset of a slice position from the normal through the first slice, in pixels."""
_REQUIRED = (
    "SeriesInstanceUID", "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns",
)  # fmt: skip


# Issue 28: series of a study folder that are no volume to segment, skipped with their reason.
NON_VOLUME_IMAGE_TYPES = ("LOCALIZER", "SCOUT", "SCREEN SAVE")
NON_VOLUME_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
}


@dataclass
class SeriesInfo:
    """One DICOM series: its files sorted along the slice normal (ascending ``position . normal``,
    the order of the volume's z axis) with their SOPInstanceUIDs in the same order."""

    uid: str
    description: str
    number: int | None
    folder: Path
    files: list[Path] = field(repr=False)
    sop_instance_uids: list[str] = field(repr=False)
    case_name: str = ""
    headers: list[pydicom.Dataset] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.case_name:
            self.case_name = series_case_name(self.description, self.number, self.uid)

    @property
    def skip_reason(self) -> str | None:
        """Why this series is no volume to segment (a localizer, a secondary capture, one image),
        None for a volume; see :func:`non_volume_reason`."""
        return non_volume_reason(self.headers)


def non_volume_reason(headers: list[pydicom.Dataset]) -> str | None:
    """Issue 28: a localizer or scout (ImageType), a secondary capture or projection radiograph
    (SOP class), or a single image is not a volume; the reason names the attribute and value."""
    if not headers:
        return None
    types = [str(v).upper() for v in (headers[0].get("ImageType") or [])]
    kind = next((t for t in NON_VOLUME_IMAGE_TYPES if t in types), None)
    if kind is not None:
        shown = "\\".join(types)  # as DICOM writes a multi-valued attribute
        return f"ImageType {shown}: a {kind.lower()} image, not a volume"
    sop = str(headers[0].get("SOPClassUID", ""))
    if sop in NON_VOLUME_SOP_CLASSES:
        return f"SOP class {NON_VOLUME_SOP_CLASSES[sop]} ({sop}), not a volume"
    if len(headers) == 1:
        return "a single image, not a volume"
    return None


def series_case_name(description: str, number: int | None, uid: str) -> str:
    """A file-system-safe case name from the series description and number (``STD_BRAIN_5MM_201``);
    ``series_<number>`` without a description, the UID's tail without either."""
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", description).strip("._-")
    parts = [p for p in (text, "" if number is None else str(number)) if p]
    if not parts:
        return "series_" + uid.replace(".", "_")[-16:]
    return "_".join(parts) if text else f"series_{number}"


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of a single-frame DICOM image with position and orientation, or None for
    anything else (other files, DICOMDIR, SEG, multi-frame, unreadable)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
        return None
    if any(key not in ds or ds[key].value in (None, "") for key in _REQUIRED):
        return None
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        return None
    return ds


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return normal / (np.linalg.norm(normal) or 1.0)  # direction cosines are stored rounded


def _position(ds: pydicom.Dataset) -> np.ndarray:
    return np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)


def _sort_key(normal: np.ndarray):
    def key(item: tuple[Path, pydicom.Dataset]):
        path, ds = item
        return (float(_position(ds) @ normal), int(ds.get("InstanceNumber") or 0), path.name)

    return key


def find_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """All single-frame DICOM image series under ``folder`` (searched recursively; each series'
    ``folder`` is the deepest folder holding all its files), non-DICOM files ignored, ordered by
    series number and UID. Case names are made unique with a UID tail."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: no such folder")
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        ds = _read_header(path)
        if ds is not None:
            groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    found = []
    for uid, items in groups.items():
        first = items[0][1]
        items.sort(key=_sort_key(_normal(first)))
        number = first.get("SeriesNumber")
        found.append(
            SeriesInfo(
                uid=uid,
                description=str(first.get("SeriesDescription") or ""),
                number=None if number in (None, "") else int(number),
                folder=Path(os.path.commonpath([p.parent for p, _ in items])),  # the series' own folder
                files=[p for p, _ in items],
                sop_instance_uids=[str(ds.SOPInstanceUID) for _, ds in items],
                headers=[ds for _, ds in items],
            )
        )
    found.sort(key=lambda s: (s.number is None, s.number or 0, s.uid))
    counts = Counter(s.case_name for s in found)
    for s in found:
        if counts[s.case_name] > 1:
            s.case_name += "_" + s.uid.replace(".", "")[-8:]
    return found


def select_series(folder: str | os.PathLike, series_uid: str | None = None) -> SeriesInfo:
    """The one series in ``folder``, or the one with ``series_uid``; a clear error otherwise."""
    series = find_series(folder)
    if not series:
        raise ImageReadError(f"{folder}: no DICOM image series (single-frame images with position and orientation)")
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            raise ImageReadError(f"{folder}: no series with UID {series_uid}; found {_listing(series)}")
        return chosen[0]
    volumes = [s for s in series if s.skip_reason is None]  # a study's localizers are not meant
    if len(volumes) == 1:
        return volumes[0]
    if len(series) > 1:
        raise ImageReadError(f"{folder}: holds {len(series)} series, choose one by UID: {_listing(series)}")
    return series[0]


def _listing(series: list[SeriesInfo]) -> str:
    return "; ".join(f"{s.uid} ({s.case_name}, {len(s.files)} slices)" for s in series)


def check_series(
    series: SeriesInfo, spacing_tolerance: float = SPACING_TOLERANCE, tilt_tolerance: float = TILT_TOLERANCE
) -> None:
    """Refuse a series whose slices do not form one regular volume: different image sizes, pixel
    spacings or orientations, several volumes (time points, acquisitions, echoes), gantry tilt,
    missing slices or uneven slice spacing. Raises ``ImageReadError`` naming the folder."""
    where = f"{series.folder}: series {series.uid} ({series.case_name})"
    headers = series.headers
    reason = (
        _varying(headers, lambda ds: (int(ds.Rows), int(ds.Columns)), "images of different sizes (rows, columns)")
        or _varying(headers, lambda ds: _rounded(ds.ImageOrientationPatient, 4), "slices in different orientations")
        or _varying(headers, lambda ds: _rounded(ds.get("PixelSpacing") or (), 4), "different pixel spacings")
        or _several_volumes(headers)
    )
    if reason is None and len(headers) > 1:
        positions = np.stack([_position(ds) for ds in headers])
        normal = _normal(headers[0])
        pixel = min(float(v) for v in headers[0].get("PixelSpacing") or (1.0, 1.0))
        reason = _tilt(positions, normal, pixel, tilt_tolerance) or _gaps(positions @ normal, spacing_tolerance)
    if reason is not None:
        raise ImageReadError(f"{where}: {reason}")


def _rounded(values, decimals: int) -> tuple[float, ...]:
    return tuple(round(float(v), decimals) for v in values)


def _varying(headers: list[pydicom.Dataset], key, what: str) -> str | None:
    counts = Counter(key(ds) for ds in headers)
    if len(counts) < 2:
        return None
    return f"{what}: " + ", ".join(f"{value} in {n} slices" for value, n in counts.most_common())


def _several_volumes(headers: list[pydicom.Dataset]) -> str | None:
    """Several time points or volumes: repeated positions or more than one temporal position,
    or acquisitions/echoes whose slice ranges overlap (CT may give each slice its own
    acquisition number; that alone is no second volume)."""
    for keyword in ("TemporalPositionIdentifier", "TemporalPositionIndex", "EchoNumbers"):
        values = {str(ds.get(keyword)) for ds in headers if ds.get(keyword) not in (None, "")}
        if len(values) > 1:
            return f"several volumes in one series ({len(values)} values of {keyword}: {sorted(values)[:5]})"
    normal = _normal(headers[0])
    along = np.asarray([_position(ds) @ normal for ds in headers])
    keys = np.round(along / 1e-3).astype(np.int64)
    repeats = len(keys) - len(np.unique(keys))
    acquisitions: dict[str, list[float]] = {}
    for ds, z in zip(headers, along, strict=True):
        acquisitions.setdefault(str(ds.get("AcquisitionNumber", "")), []).append(float(z))
    if repeats:
        detail = f"; AcquisitionNumber values {sorted(acquisitions)}" if len(acquisitions) > 1 else ""
        return f"several volumes in one series: {repeats} slice positions occur more than once{detail}"
    ranges = sorted((min(z), max(z)) for z in acquisitions.values() if len(z) > 1)
    if any(b[0] < a[1] for a, b in zip(ranges, ranges[1:], strict=False)):
        return f"several volumes in one series: acquisitions {sorted(acquisitions)} cover overlapping slice ranges"
    return None


def _tilt(positions: np.ndarray, normal: np.ndarray, pixel: float, tolerance: float) -> str | None:
    """Slice positions must lie on the normal through the first slice; a sideways drift is gantry
    tilt (or a sheared stack), which a volume with orthogonal axes cannot hold."""
    offsets = positions - positions[0]
    along = offsets @ normal
    sideways = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    worst = int(np.argmax(sideways))
    if sideways[worst] <= tolerance * pixel:
        return None
    angle = np.degrees(np.arctan2(sideways[worst], abs(along[worst])))
    return (
        f"gantry tilt or sheared slices: slice positions drift {sideways[worst]:.2f} mm sideways from the "
        f"slice normal ({angle:.1f} degrees); tilted series are not resampled, correct them first "
        "(e.g. dcm2niix) or export without tilt"
    )


def _gaps(along: np.ndarray, tolerance: float) -> str | None:
    """Missing slices (a gap of about two steps or more) or uneven slice spacing."""
    gaps = np.diff(along)
    step = float(np.median(gaps))
    big = np.flatnonzero(gaps > 1.5 * step)
    if big.size:
        i = int(big[0])
        return (
            f"missing slice(s): a gap of {gaps[i]:.3g} mm between slice positions {along[i]:.2f} and "
            f"{along[i + 1]:.2f} mm along the normal, the usual spacing is {step:.3g} mm ({big.size} gap(s))"
        )
    deviation = np.abs(gaps - step)
    if deviation.max() > tolerance * step:
        return (
            f"non-uniform slice spacing: gaps from {gaps.min():.3g} to {gaps.max():.3g} mm "
            f"(median {step:.3g} mm, tolerance {tolerance:.0%})"
        )
    return None


def read_series(
    folder: str | os.PathLike,
    series_uid: str | None = None,
    spacing_tolerance: float = SPACING_TOLERANCE,
    tilt_tolerance: float = TILT_TOLERANCE,
) -> Volume:
    """One DICOM series as a ``Volume`` (``array`` [z, y, x], z along the slice normal; geometry as
    SimpleITK's series reader gives it; rescale slope and intercept applied, as float32 when they
    vary between slices). ``Volume.source`` holds the ``SeriesInfo`` (files, SOPInstanceUIDs)."""
    return volume_from_series(select_series(folder, series_uid), spacing_tolerance, tilt_tolerance)


def volume_from_series(
    series: SeriesInfo, spacing_tolerance: float = SPACING_TOLERANCE, tilt_tolerance: float = TILT_TOLERANCE
) -> Volume:
    """A series found by ``find_series`` as a ``Volume``, checked first (see ``read_series``)."""
    check_series(series, spacing_tolerance, tilt_tolerance)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in series.files])
    rescales = {(float(ds.get("RescaleSlope") or 1), float(ds.get("RescaleIntercept") or 0)) for ds in series.headers}
    if len(rescales) > 1:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(f"{series.folder}: series {series.uid}: voxel data cannot be read: {err}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{series.folder}: series {series.uid}: colour images; expected one value per voxel")
    if image.GetDimension() != 3 or image.GetSize()[2] != len(series.files):
        raise ImageReadError(f"{series.folder}: series {series.uid}: read {image.GetSize()}, not one slice per file")
    array = sitk.GetArrayFromImage(image)
    return Volume(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), series.folder, source=series)


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds at least one DICOM image (searched recursively)."""
    return any(p.is_file() and _read_header(p) is not None for p in Path(folder).rglob("*"))
