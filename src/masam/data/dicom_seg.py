"""Label maps as DICOM-SEG (highdicom), referencing the source series frame by frame.

One segment per class of the model, numbered 1..N in the order of the class values; each frame
references the source slice it was derived from (``labels[z]`` <-> ``series.files[z]``). Frames
without any voxel of a segment are left out (highdicom's ``omit_empty_frames``), so a class the
model never predicted is still declared as a segment, with no frames; a label map with no
foreground at all is written with all frames empty, as highdicom does.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..fileio import atomic_path
from .dicom import SeriesInfo
from .io import ImageReadError

GENERIC_CODES = (codes.SCT.Tissue, codes.SCT.Tissue)
"""(segmented property category, type) for classes without codes of their own."""
_LO = 64  # longest value of a DICOM LO element (segment labels, algorithm names)


class DicomSegError(ValueError):
    """A label map that cannot be written as DICOM-SEG for its series; the message says why."""


def write_dicom_seg(
    path: str | os.PathLike,
    labels: np.ndarray,
    series: SeriesInfo,
    class_names: dict[int, str],
    algorithm_name: str = "masam",
    algorithm_version: str | None = None,
    model_name: str | None = None,
    class_codes: dict[int, tuple[Code, Code]] | None = None,
    series_number: int | None = None,
) -> Path:
    """Write ``labels`` ``[z, y, x]`` (class values, z in the order of ``series.files``) as a BINARY
    DICOM-SEG at ``path``, atomically. ``class_names`` maps class values (background 0 excluded) to
    segment labels; ``class_codes`` optionally gives a class its (category, type) codes, otherwise
    SCT "Tissue". The algorithm is identified by name, version (masam's by default) and, when
    given, ``model_name`` (a parameter of the algorithm and the SEG's model name)."""
    path = Path(path)
    classes = sorted(int(c) for c in class_names if int(c) != 0)
    segment_map = _segment_map(labels, series, classes)
    version = algorithm_version if algorithm_version is not None else _masam_version()
    algorithm = _algorithm(algorithm_name, version, model_name)
    descriptions = [
        _segment(number, class_names[value], (class_codes or {}).get(value, GENERIC_CODES), algorithm)
        for number, value in enumerate(classes, start=1)
    ]
    source = [_repaired(ds) for ds in _headers(series)]
    with warnings.catch_warnings():
        # one-part patient names ("JANCT000") are common in real headers; they are copied as they are
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        warnings.filterwarnings("ignore", message=".*omit_empty_frames.*")
        seg = hd.seg.Segmentation(
            source_images=source,
            pixel_array=segment_map,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number if series_number is not None else _default_series_number(series),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="masam",
            manufacturer_model_name=(model_name or algorithm_name)[:_LO],
            software_versions=version,
            device_serial_number="0",
            series_description=f"{algorithm_name} segmentation"[:_LO],
            content_description=(f"{algorithm_name} {version}" + (f", model {model_name}" if model_name else ""))[:_LO],
            content_label="MASAM",
        )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _segment_map(labels: np.ndarray, series: SeriesInfo, classes: list[int]) -> np.ndarray:
    """``labels`` renumbered to segment numbers 1..N (class ``classes[i]`` -> ``i + 1``), checked
    against the series: one frame per file, the image size, only declared classes."""
    if not classes:
        raise DicomSegError("class_names declares no foreground class")
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "iub":
        raise DicomSegError(f"labels must be a 3D integer array [z, y, x], got {labels.ndim}D {labels.dtype}")
    first = _headers(series)[0]
    want = (len(series.files), int(first.Rows), int(first.Columns))
    if labels.shape != want:
        raise DicomSegError(f"{series.folder}: labels of shape {labels.shape} for a series of shape {want} [z, y, x]")
    present = np.unique(labels)
    undeclared = sorted(set(present.tolist()) - set(classes) - {0})
    if undeclared:
        raise DicomSegError(f"label values {undeclared} have no entry in class_names")
    lookup = np.zeros(int(present.max()) + 1, dtype=np.uint16 if len(classes) > 255 else np.uint8)
    for number, value in enumerate(classes, start=1):
        if value < lookup.size:
            lookup[value] = number
    return lookup[labels]


def _algorithm(name: str, version: str, model_name: str | None) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=name[:_LO],
        family=codes.cid7162.ArtificialIntelligence,
        version=version,
        source="masam",
        parameters={"model": model_name} if model_name else None,
    )


def _headers(series: SeriesInfo) -> list[pydicom.Dataset]:
    """The series' headers (kept by ``find_series``, read again for a hand-made ``SeriesInfo``)."""
    return series.headers or [pydicom.dcmread(p, stop_before_pixels=True) for p in series.files]


def _segment(number: int, name: str, coded: tuple[Code, Code], algorithm) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=str(name)[:_LO],
        segmented_property_category=coded[0],
        segmented_property_type=coded[1],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def _repaired(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of a source header that highdicom accepts: text decoded with the source's character
    set, then an empty or unknown SpecificCharacterSet replaced by UTF-8 (ISO_IR 192), which can
    encode every decoded value; Type 2 patient/study attributes that are absent added empty."""
    ds = copy.deepcopy(ds)
    ds.decode()
    charset = ds.get("SpecificCharacterSet")
    values = [charset] if isinstance(charset, str) else list(charset or [])
    if not values or not all(_known_charset(v) for v in values):
        ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
        "ReferringPhysicianName", "StudyID", "AccessionNumber",
    ):  # fmt: skip
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _known_charset(value: str) -> bool:
    try:
        hd.enum.SpecificCharacterSetValues(value)
    except ValueError:
        return False
    return True


def _default_series_number(series: SeriesInfo) -> int:
    """The source series number + 1000, so viewers list the SEG after its series."""
    return (series.number or 0) + 1000


def _masam_version() -> str:
    from .._version import __version__

    return __version__


def read_dicom_seg_labels(path: str | os.PathLike, series: SeriesInfo) -> np.ndarray:
    """A SEG's segments as a label map ``[z, y, x]`` of segment numbers on the slices of ``series``
    (frames matched by referenced SOPInstanceUID); slices without frames are 0."""
    try:
        seg = hd.seg.segread(path)
    except (OSError, ValueError, AttributeError) as err:
        raise ImageReadError(f"{path}: cannot be read as DICOM-SEG: {err}") from None
    return seg.get_pixels_by_source_instance(series.sop_instance_uids, combine_segments=True)
