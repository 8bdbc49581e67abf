"""Issue 15: DICOM series in, DICOM-SEG (and NIfTI) out, through ``masam predict`` and ``predict_inputs``."""

from __future__ import annotations

import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

import masam
from masam.cli import main
from masam.data.dicom import find_series
from masam.data.normalize import Normalization, spec_for
from masam.infer import Predictor
from masam.infer.predict_files import find_inputs, predict_inputs
from masam.infer.predictor import Prediction
from tests.conftest import SHARED, require_shared
from tests.model.helpers import randomise

DICOM = SHARED / "data" / "dicom"
LABELS = {"background": 0, "liver": 1, "lesion": 2}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = masam.load_model(
        arch="vit_tiny", num_classes=2, image_size=32, rank=4, model_options={"label_names": LABELS}
    )
    randomise(model)
    model.input_spec = spec_for(Normalization("CT"), ("CT",), 5, 32)
    path = tmp_path_factory.mktemp("model") / "tiny_ct.safetensors"
    masam.save_weights(model, path)
    return path


def _series_reader(folder) -> sitk.Image:
    """The independent reference geometry: SimpleITK's GDCM series reader."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _in_sitk_order(volume: hd.Volume, image: sitk.Image) -> np.ndarray:
    """highdicom's ``get_volume()`` array re-indexed onto the NIfTI's numpy grid ``[z, y, x]``,
    from the two affines alone: each highdicom axis is one NIfTI axis, possibly reversed."""
    to_index = np.linalg.inv(np.reshape(image.GetDirection(), (3, 3)) @ np.diag(image.GetSpacing()))
    steps = to_index @ (np.asarray(volume.direction) @ np.diag(volume.spacing))  # hd axis a -> NIfTI index
    start = to_index @ (np.asarray(volume.position) - np.asarray(image.GetOrigin()))
    array = volume.array
    order = [0, 0, 0]
    for axis in range(3):
        target = int(np.argmax(np.abs(steps[:, axis])))
        assert np.isclose(abs(steps[target, axis]), 1, atol=1e-3), steps
        if steps[target, axis] < 0:
            array = np.flip(array, axis)
            start[target] -= array.shape[axis] - 1
        order[2 - target] = axis
    assert np.allclose(start, 0, atol=1e-2), start  # the two grids cover the same voxels
    return np.transpose(array, order)


def _check_seg(seg_path, nifti_path, series) -> None:
    """The SEG reads back with pydicom and highdicom, its frames reference the source slices, and
    its label volume (z in the series' slice order) equals the NIfTI output voxel for voxel."""
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    seg = hd.seg.Segmentation.from_dataset(ds)
    names = {int(s.SegmentNumber): s.SegmentLabel for s in ds.SegmentSequence}
    assert names == {1: "liver", 2: "lesion"}
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "masam"
    assert "tiny_ct" in ds.ManufacturerModelName
    referenced = [
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    assert set(referenced) <= set(series.sop_instance_uids) and referenced
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(nifti_path)))
    by_uid = seg.get_pixels_by_source_instance(
        series.sop_instance_uids, combine_segments=True, skip_overlap_checks=True
    )
    assert np.array_equal(np.asarray(by_uid), expected)
    image = sitk.ReadImage(str(nifti_path))
    assert np.array_equal(_in_sitk_order(seg.get_volume(combine_segments=True), image), expected)


@pytest.mark.parametrize("name", ["philips_ct_phantom", "siemens_mr_sagittal"])
def test_predict_dicom_series_end_to_end(weights, tmp_path, name):
    folder = require_shared(DICOM / name)
    out = tmp_path / "out"
    code = main(
        ["predict", "-m", str(weights), "-i", str(folder), "-o", str(out), "--output-format", "dicom-seg",
         "--mode", "fast", "--batch-size", "8", "--quiet"]
    )  # fmt: skip
    assert code == 0
    (series,) = find_series(folder)
    nifti, seg = out / f"{series.case_name}.nii.gz", out / f"{series.case_name}.dcm"
    assert sorted(p.name for p in out.glob("[!.]*")) == sorted([nifti.name, seg.name])
    written, reference = sitk.ReadImage(str(nifti)), _series_reader(folder)
    assert written.GetSize() == reference.GetSize()
    assert np.allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-4)
    assert np.allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    assert np.allclose(written.GetDirection(), reference.GetDirection(), atol=1e-5)
    _check_seg(seg, nifti, series)


@pytest.mark.parametrize("name", ["philips_ct_phantom", "siemens_mr_sagittal"])
def test_seg_equals_nifti_for_a_nonempty_label_map(weights, tmp_path, monkeypatch, name):
    """A random tiny model may predict background only; here the label map is planted (bright voxels
    class 1, one corner of the last slice class 2) so that frame order and orientation are tested."""
    folder = require_shared(DICOM / name)
    predictor = Predictor.from_files(weights)

    def planted(volume, **_):
        labels = (volume.array > np.percentile(volume.array, 80)).astype(np.uint8)
        labels[-1, :4, :6] = 2
        return Prediction(labels, volume)

    monkeypatch.setattr(predictor, "predict", planted)
    report = predict_inputs(predictor, folder, tmp_path, output_format="dicom-seg")
    assert not report.failed
    (series,) = find_series(folder)
    nifti = tmp_path / f"{series.case_name}.nii.gz"
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(nifti))).max() == 2
    _check_seg(tmp_path / f"{series.case_name}.dcm", nifti, series)


def test_a_folder_of_several_series_gives_one_case_each_and_series_picks_one(weights, tmp_path, capsys):
    both = tmp_path / "both"
    for name in ("philips_ct_phantom", "siemens_mr_sagittal"):
        shutil.copytree(require_shared(DICOM / name), both / name)
    cases = find_inputs(both)
    assert sorted(n for n, _ in cases) == ["Product_EPI_Sag_Ascending_5001", "STD_BRAIN_5MM_201"]
    mr_uid = next(s.uid for _, s in cases if s.case_name.startswith("Product"))
    out = tmp_path / "out"
    args = ["predict", "-m", str(weights), "-i", str(both), "-o", str(out), "--mode", "fast", "--quiet"]
    assert main([*args, "--series", mr_uid]) == 0
    assert [p.name for p in out.glob("[!.]*")] == ["Product_EPI_Sag_Ascending_5001.nii.gz"]
    assert main([*args, "--series", "1.2.3.4"]) == 1
    assert "1.2.3.4" in capsys.readouterr().err


def test_dicom_seg_output_needs_dicom_input(weights, tmp_path, capsys):
    image = tmp_path / "in" / "ct_0000.nii.gz"
    image.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 16, 16), np.int16)), str(image))
    args = ["predict", "-m", str(weights), "-i", str(image.parent), "-o", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--output-format", "dicom-seg"]) == 1
    assert "dicom-seg needs a DICOM series" in capsys.readouterr().err


def test_a_study_folder_predicts_its_volume_and_names_what_it_skips(weights, tmp_path, capsys):
    from tests.data.test_dicom import write_study

    study = write_study(tmp_path)
    out = tmp_path / "out"
    code = main(["predict", "-m", str(weights), "-i", str(study), "-o", str(out), "--mode", "fast", "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 0 and stderr == ""
    assert [p.name for p in out.glob("[!.]*")] == ["STD_BRAIN_5MM_201.nii.gz"]
    assert stdout.splitlines()[-3:] == [
        "skipped Dose_Report_501: SOP class Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7), not a volume",
        "skipped Survey_1: ImageType ORIGINAL\\PRIMARY\\LOCALIZER: a localizer image, not a volume",
        f"wrote 1 prediction(s) to {out} (STD_BRAIN_5MM_201.nii.gz); skipped 2 series (Dose_Report_501, Survey_1)",
    ]
