"""DICOM-SEG written for the shared series, read back with pydicom and highdicom and compared with
the real SEG in dicom/ge_ct_3slice_seg."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import masam
from masam.data.dicom import read_series
from masam.data.dicom_seg import DicomSegError, read_dicom_seg_labels, write_dicom_seg
from masam.data.io import write_label
from tests.conftest import SHARED, require_shared

DICOM = SHARED / "data" / "dicom"
CLASSES = {1: "bright", 2: "never predicted", 5: "corner"}


def _labels(volume) -> np.ndarray:
    """Class 1 on bright voxels, class 5 in one corner of the last slice, class 2 nowhere."""
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[volume.array > np.percentile(volume.array, 90)] = 1
    labels[-1, :5, :7] = 5
    return labels


def _frames_by_source(seg: pydicom.Dataset) -> dict[str, tuple[int, list[float]]]:
    """For each frame: the referenced source SOPInstanceUID -> (segment number, frame position)."""
    out = {}
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out.setdefault(uid, []).append((number, [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]))
    return out


@pytest.fixture(scope="module")
def philips(tmp_path_factory):
    volume = read_series(require_shared(DICOM / "philips_ct_phantom"))
    labels = _labels(volume)
    out = tmp_path_factory.mktemp("seg")
    path = write_dicom_seg(out / "phantom_seg.dcm", labels, volume.source, CLASSES, model_name="phantom_model.pt")
    nifti = write_label(out / "phantom.nii.gz", labels, volume)
    return volume, labels, path, nifti


def test_frames_reference_source_slices(philips):
    volume, labels, path, _ = philips
    seg = pydicom.dcmread(path)
    series = volume.source
    frames = _frames_by_source(seg)
    assert set(frames) <= set(series.sop_instance_uids)
    pixels = seg.pixel_array.reshape(-1, 512, 512)
    frame_index = 0
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = series.sop_instance_uids.index(uid)
        source = pydicom.dcmread(series.files[z], stop_before_pixels=True)
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in source.ImagePositionPatient], atol=1e-4)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        value = {1: 1, 2: 2, 3: 5}[number]  # segments are numbered by ascending class value
        np.testing.assert_array_equal(pixels[frame_index], labels[z] == value)
        frame_index += 1
    slices_with_class1 = {series.sop_instance_uids[z] for z in np.flatnonzero((labels == 1).any(axis=(1, 2)))}
    assert {u for u, f in frames.items() if any(n == 1 for n, _ in f)} == slices_with_class1


def test_segments_algorithm_and_structure_match_the_real_seg(philips):
    volume, _, path, _ = philips
    seg = pydicom.dcmread(path)
    real = pydicom.dcmread(require_shared(DICOM / "ge_ct_3slice_seg" / "liver.dcm"))
    for keyword in ("SOPClassUID", "Modality", "SegmentationType", "BitsAllocated", "ImageType", "SamplesPerPixel"):
        assert seg[keyword].value == real[keyword].value, keyword
    dimensions = [d.DimensionDescriptionLabel.replace(" ", "") for d in seg.DimensionIndexSequence]
    assert dimensions[-1] == "ImagePositionPatient" == real.DimensionIndexSequence[-1].DimensionDescriptionLabel
    source = pydicom.dcmread(volume.source.files[0], stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
        assert seg[keyword].value == source[keyword].value, keyword
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.source.uid
    assert seg.SeriesInstanceUID != volume.source.uid and seg.SeriesNumber == 1201
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["bright", "never predicted", "corner"]  # the empty class is declared, with no frames
    for item in seg.SegmentSequence:
        assert item.SegmentAlgorithmType == "AUTOMATIC" and item.SegmentAlgorithmName == "masam"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmVersion == masam.__version__ and "phantom_model.pt" in algorithm.AlgorithmParameters
    assert seg.ManufacturerModelName == "phantom_model.pt" and seg.SoftwareVersions == masam.__version__


def test_get_volume_equals_the_nifti_output(philips):
    volume, labels, path, nifti = philips
    seg = hd.seg.segread(path)
    from_seg = seg.get_volume(combine_segments=True)
    written = hd.Volume.from_simpleitk(sitk.ReadImage(str(nifti)))
    matched = from_seg.match_geometry(written)  # pads the slices without frames, flips to the NIfTI's axes
    np.testing.assert_array_equal(matched.array, np.where(written.array == 5, 3, written.array))
    back = read_dicom_seg_labels(path, volume.source)
    np.testing.assert_array_equal(back, np.where(labels == 5, 3, labels))


def test_imperfect_ge_headers(tmp_path):
    """Empty SpecificCharacterSet, empty PatientBirthDate, a one-part name; and here also no
    PatientSex or PatientID at all: written without error, names kept."""
    volume = read_series(require_shared(DICOM / "ge_ct_3slice"))
    series = volume.source
    assert series.headers[0].SpecificCharacterSet == "" and series.headers[0].PatientBirthDate == ""
    for ds in series.headers[:1]:
        del ds.PatientSex, ds.PatientID
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[1, 200:300, 250:330] = 1
    path = write_dicom_seg(tmp_path / "ge.dcm", labels, series, {1: "liver"})
    seg = pydicom.dcmread(path)
    assert seg.PatientName == "JANCT000" and seg.PatientSex == "" and seg.PatientID == ""
    assert seg.SpecificCharacterSet == "ISO_IR 192"
    assert series.headers[0].SpecificCharacterSet == ""  # the source headers are not changed
    assert seg.NumberOfFrames == 1
    frame_source = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert frame_source.ReferencedSOPInstanceUID == series.sop_instance_uids[1]
    np.testing.assert_array_equal(read_dicom_seg_labels(path, series), labels)


def test_bad_label_maps_are_refused_and_nothing_is_written(tmp_path):
    volume = read_series(require_shared(DICOM / "ge_ct_3slice"))
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[0, 0, 0] = 7
    target = tmp_path / "x.dcm"
    with pytest.raises(DicomSegError, match=r"label values \[7\] have no entry in class_names"):
        write_dicom_seg(target, labels, volume.source, {1: "liver"})
    with pytest.raises(DicomSegError, match="labels of shape"):
        write_dicom_seg(target, labels[:2], volume.source, {1: "liver"})
    assert list(tmp_path.iterdir()) == []


def test_sagittal_seg_matches_its_nifti(tmp_path):
    """Slices along x (sagittal): highdicom's volume has other axes than SimpleITK's; matched by geometry."""
    volume = read_series(require_shared(DICOM / "siemens_mr_sagittal"))
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[3:7, 10:40, 5:20] = 1
    labels[50, 60:70, 60:80] = 2
    path = write_dicom_seg(tmp_path / "sag.dcm", labels, volume.source, {1: "a", 2: "b"})
    nifti = write_label(tmp_path / "sag.nii.gz", labels, volume)
    from_seg = hd.seg.segread(path).get_volume(combine_segments=True)
    written = hd.Volume.from_simpleitk(sitk.ReadImage(str(nifti)))
    assert from_seg.spatial_shape != written.spatial_shape  # only slices with frames, other axis order
    np.testing.assert_array_equal(from_seg.match_geometry(written).array, written.array)
