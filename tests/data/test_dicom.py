"""DICOM series input: the shared real series against SimpleITK's own GDCM reading, and faulty
series built from them by editing headers with pydicom."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from masam.data.dicom import find_series, read_series, series_case_name, volume_from_series
from masam.data.io import ImageReadError, read_volume
from tests.conftest import SHARED, require_shared

DICOM = SHARED / "data" / "dicom"


def _gdcm_reference(folder: Path) -> sitk.Image:
    """The series as SimpleITK reads it with the file order GDCM chooses."""
    (uid,) = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(require_shared(DICOM / name), tmp_path / name))


def _edit(folder: Path, change) -> None:
    """Apply ``change(index, dataset)`` to every slice; index: the slice's place along the normal."""
    for path in sorted(p for p in folder.iterdir() if p.name.startswith("I")):
        ds = pydicom.dcmread(path)
        change(int(path.name[1:]) // 10 - 1, ds)  # I10 is the first slice along the normal, I280 the last
        ds.save_as(path)


def test_philips_matches_gdcm_geometry_and_voxels():
    folder = require_shared(DICOM / "philips_ct_phantom")
    volume = read_series(folder)
    reference = _gdcm_reference(folder)
    assert volume.array.shape == (28, 512, 512)
    np.testing.assert_allclose(volume.spacing, reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(volume.origin, reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(volume.direction, reference.GetDirection(), atol=1e-9)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference))
    series = volume.source
    assert series.case_name == "STD_BRAIN_5MM_201" and series.number == 201
    assert [p.name for p in series.files] != sorted(p.name for p in series.files)  # names do not sort
    assert "DIRFILE" not in {p.name for p in series.files} and len(series.files) == 28


def test_philips_order_and_rescale_from_pydicom():
    """Independent of ITK: slices ascend along the normal, SOPInstanceUIDs follow them, and voxels
    are the stored values times slope plus intercept."""
    series = read_series(require_shared(DICOM / "philips_ct_phantom"))
    info = series.source
    headers = [pydicom.dcmread(p) for p in info.files]
    z = [float(ds.ImagePositionPatient[2]) for ds in headers]  # axial: the normal is +z
    assert z == sorted(z) and z[1] - z[0] == pytest.approx(5.0)
    assert info.sop_instance_uids == [ds.SOPInstanceUID for ds in headers]
    for index in (0, 13, 27):
        ds = headers[index]
        expected = ds.pixel_array.astype(np.int32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(series.array[index], expected)
    assert series.array.min() == -1024


def test_siemens_sagittal_direction():
    folder = require_shared(DICOM / "siemens_mr_sagittal")
    volume = read_volume(folder)  # a DICOM folder through the generic reader
    reference = _gdcm_reference(folder)
    assert volume.array.shape == (63, 86, 86)
    np.testing.assert_allclose(volume.direction, (0, 0, -1, 1, 0, 0, 0, -1, 0), atol=1e-6)
    np.testing.assert_allclose(volume.origin, reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(volume.spacing, (2.23256, 2.23256, 2.2), atol=1e-6)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference))


def test_case_names_are_file_system_safe():
    assert series_case_name("T2 / ax (fs)", 5, "1.2.3") == "T2_ax_fs_5"
    assert series_case_name("", 2, "1.2.3") == "series_2"
    assert series_case_name("", None, "1.2.840.99") == "series_1_2_840_99"


def test_gantry_tilt_is_refused(tmp_path):
    folder = _copy("philips_ct_phantom", tmp_path)

    def tilt(i, ds):  # each slice 1 mm further in y: about 11 degrees of tilt
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + i * 1.0, z]

    _edit(folder, tilt)
    with pytest.raises(ImageReadError, match="gantry tilt") as err:
        read_series(folder)
    assert str(folder) in str(err.value) and "11.3 degrees" in str(err.value)


def test_uneven_spacing_is_refused_small_jitter_accepted(tmp_path):
    folder = _copy("philips_ct_phantom", tmp_path)
    shift = {10: 1.0}

    def move(i, ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + shift.get(i, 0.0)]

    _edit(folder, move)
    with pytest.raises(ImageReadError, match="non-uniform slice spacing") as err:
        read_series(folder)
    assert str(folder) in str(err.value)
    shift = {10: -1.0, 4: 0.1}  # undo, and jitter one slice by 2 % of the spacing
    _edit(folder, move)
    assert read_series(folder).array.shape == (28, 512, 512)


def test_missing_slice_is_refused(tmp_path):
    folder = _copy("philips_ct_phantom", tmp_path)
    (folder / "I150").unlink()
    with pytest.raises(ImageReadError, match="missing slice") as err:
        read_series(folder)
    assert str(folder) in str(err.value) and "gap of 10 mm" in str(err.value)


def test_two_volumes_in_one_series_are_refused(tmp_path):
    folder = _copy("philips_ct_phantom", tmp_path)
    for path in [p for p in folder.iterdir() if p.name.startswith("I")]:
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AcquisitionNumber = 2
        ds.save_as(folder / f"second_{path.name}")
    with pytest.raises(ImageReadError, match="several volumes") as err:
        read_series(folder)
    assert str(folder) in str(err.value) and "AcquisitionNumber" in str(err.value)


def test_temporal_positions_are_refused(tmp_path):
    folder = _copy("ge_ct_3slice", tmp_path)
    for i, path in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.TemporalPositionIdentifier = 1 + i % 2
        ds.save_as(path)
    with pytest.raises(ImageReadError, match="several volumes.*TemporalPositionIdentifier"):
        read_series(folder)


def test_different_image_sizes_are_refused(tmp_path):
    folder = _copy("philips_ct_phantom", tmp_path)
    ds = pydicom.dcmread(folder / "I100")
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:256, :256]).tobytes()
    ds.Rows = ds.Columns = 256
    ds.save_as(folder / "I100")
    with pytest.raises(ImageReadError, match="images of different sizes") as err:
        read_series(folder)
    assert str(folder) in str(err.value) and "(256, 256) in 1 slices" in str(err.value)


def test_two_series_in_one_folder_are_split(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("philips_ct_phantom", "ge_ct_3slice"):
        for path in require_shared(DICOM / name).iterdir():
            shutil.copy(path, folder / f"{name}_{path.name}")
    series = find_series(folder)
    assert [(s.case_name, len(s.files)) for s in series] == [("series_2", 3), ("STD_BRAIN_5MM_201", 28)]
    with pytest.raises(ImageReadError, match="holds 2 series, choose one by UID") as err:
        read_series(folder)
    assert str(folder) in str(err.value) and series[1].uid in str(err.value)
    chosen = read_series(folder, series_uid=series[0].uid)
    assert chosen.array.shape == (3, 512, 512) and chosen.source.uid == series[0].uid
    np.testing.assert_array_equal(volume_from_series(series[1]).array, read_series(DICOM / "philips_ct_phantom").array)
    with pytest.raises(ImageReadError, match="no series with UID 1.2.3"):
        read_series(folder, series_uid="1.2.3")


def test_equal_names_get_a_uid_suffix_and_empty_folder_is_refused(tmp_path):
    folder = _copy("ge_ct_3slice", tmp_path)
    for path in sorted(folder.glob("*.dcm"))[:2]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = "1.2.3.4.55555555"
        ds.save_as(path)
    names = sorted(s.case_name for s in find_series(folder))
    assert len(set(names)) == 2 and all(n.startswith("series_2_") for n in names)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    with pytest.raises(ImageReadError, match="no DICOM image series"):
        read_series(empty)


def test_series_in_subfolders_are_found_with_their_own_folder(tmp_path):
    a, b = _copy("ge_ct_3slice", tmp_path / "study" / "a"), _copy("siemens_mr_sagittal", tmp_path / "study" / "b")
    series = find_series(tmp_path / "study")
    assert [(s.case_name, s.folder) for s in series] == [("series_2", a), ("Product_EPI_Sag_Ascending_5001", b)]


def write_study(tmp_path: Path) -> Path:
    """Issue 28: a study folder as a scanner exports it: the Philips CT series, a one-image
    localizer (ImageType LOCALIZER) and two dose-report screenshots (Secondary Capture, at one
    position), each a series of its own built from copies of the CT's files."""
    study = tmp_path / "study"
    ct = _copy("philips_ct_phantom", study)
    extras = {"survey": ("Survey", 1, ["I10"]), "dose": ("Dose Report", 501, ["I20", "I30"])}
    for folder, (description, number, files) in extras.items():
        (study / folder).mkdir()
        uid = generate_uid()
        for name in files:
            ds = pydicom.dcmread(ct / name)
            ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = uid, description, number
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            if folder == "survey":
                ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            else:
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
                ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.save_as(study / folder / name)
    return study


def test_localizers_and_secondary_captures_are_named_as_no_volume(tmp_path):
    study = write_study(tmp_path)
    reasons = {s.case_name: s.skip_reason for s in find_series(study)}
    assert reasons == {
        "Survey_1": "ImageType ORIGINAL\\PRIMARY\\LOCALIZER: a localizer image, not a volume",
        "STD_BRAIN_5MM_201": None,
        "Dose_Report_501": "SOP class Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7), not a volume",
    }
    # the study's one volume is the series it means; the others are no reason to ask for a UID
    assert read_series(study).source.case_name == "STD_BRAIN_5MM_201"
