"""Reading real and synthetic images with their geometry, writing labels back, refusing bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from masam.data import ImageReadError, read_label, read_volume, slice_axis, write_label
from tests.conftest import SHARED, require_shared
from tests.data.helpers import write_volume

DATA = SHARED / "data"
REAL = [
    # image, label, numpy slice axis, dtype
    ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/v1_commit_0effae9d/example_seg.nii.gz", 0, np.int32),
    ("totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_seg.nii.gz", 0, np.int16),
    ("totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_seg_mr.nii.gz", 0, np.int16),
    (
        "deepmedic_brats2015/brats_2013_pat0001_1/Flair_subtrMeanDivStd.nii.gz",
        "deepmedic_brats2015/brats_2013_pat0001_1/OTMultiClass.nii.gz",
        0,
        np.float32,
    ),
    ("pyradiomics/brain1_image.nrrd", "pyradiomics/brain1_label.nrrd", 0, np.int16),
]


@pytest.mark.parametrize("image_rel,label_rel,axis,dtype", REAL, ids=[r[0].split("/")[-1] for r in REAL])
def test_real_volumes_load_and_labels_write_back_with_their_geometry(image_rel, label_rel, axis, dtype, tmp_path):
    image = read_volume(require_shared(DATA / image_rel))
    label = read_label(DATA / label_rel, image)
    assert image.array.dtype == dtype and image.array.ndim == 3
    assert slice_axis(image) == axis
    assert label.array.dtype == np.uint8 and label.array.max() >= 1
    ending = ".nrrd" if image_rel.endswith(".nrrd") else ".nii.gz"
    out = write_label(tmp_path / f"pred{ending}", label.array, image)
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == sitk.ReadImage(str(DATA / image_rel)).GetSize()
    assert np.allclose(back.GetSpacing(), image.spacing, atol=1e-5)
    assert np.allclose(back.GetOrigin(), image.origin, atol=1e-5)
    assert np.allclose(back.GetDirection(), image.direction, atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(back), label.array)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_slice_axis_is_the_largest_spacing_then_the_axial_axis(tmp_path):
    vol = np.zeros((6, 7, 8), np.int16)
    assert slice_axis(read_volume(write_volume(tmp_path / "a.nii.gz", vol, spacing=(1.0, 4.0, 1.0)))) == 1
    # isotropic, acquired sagittally: image axis x points head-foot, so x is the slice axis
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)  # row-major; column 0 (axis x) = (0, 0, 1)
    assert slice_axis(read_volume(write_volume(tmp_path / "b.nii.gz", vol, direction=sagittal))) == 2
    assert slice_axis(read_volume(write_volume(tmp_path / "c.nii.gz", vol))) == 0


def test_bad_images_are_refused_with_the_file_named(tmp_path):
    good = write_volume(tmp_path / "good.nii.gz", np.zeros((4, 5, 6), np.int16))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:400]))
    not_image = tmp_path / "notes.nii.gz"
    not_image.write_text("hello")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), str(flat))
    four_d = tmp_path / "fourd.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.int16), isVector=False), str(four_d))
    nan = write_volume(tmp_path / "nan.nii.gz", np.full((3, 4, 5), np.nan, np.float32))
    cases = [
        (truncated, "truncated.nii.gz: "),
        (not_image, "notes.nii.gz: cannot be read"),
        (flat, "flat.nii.gz: is a 2D image"),
        (four_d, "fourd.nii.gz: is a 4D image"),
        (nan, "nan.nii.gz: contains NaN"),
        (tmp_path / "absent.nii.gz", "absent.nii.gz: no such file"),
    ]
    for path, message in cases:
        with pytest.raises(ImageReadError, match=message.replace(".", r"\.")):
            read_volume(path)


def test_bad_labels_are_refused(tmp_path):
    image = read_volume(write_volume(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), np.int16)))
    shape = write_volume(tmp_path / "shape.nii.gz", np.zeros((4, 5, 7), np.uint8))
    moved = write_volume(tmp_path / "moved.nii.gz", np.zeros((4, 5, 6), np.uint8), origin=(5.0, 0.0, 0.0))
    fraction = write_volume(tmp_path / "frac.nii.gz", np.full((4, 5, 6), 0.5, np.float32))
    with pytest.raises(ImageReadError, match=r"shape.nii.gz: label size \(x, y, z\)"):
        read_label(shape, image)
    with pytest.raises(ImageReadError, match="moved.nii.gz: label geometry"):
        read_label(moved, image)
    with pytest.raises(ImageReadError, match="frac.nii.gz: label values are not integers"):
        read_label(fraction, image)


def test_label_frames_keep_their_class_indices(tmp_path):
    from PIL import Image

    from masam.data.io import read_frames

    indices = np.zeros((6, 8), np.uint8)
    indices[1:3, 2:5] = 1
    indices[4:, 6:] = 2
    palette_dir = tmp_path / "palette"
    palette_dir.mkdir()
    frame = Image.fromarray(indices, mode="P")
    frame.putpalette([0, 0, 0, 255, 255, 255, 30, 30, 30] + [0] * (256 * 3 - 9))  # grey levels unlike 0, 1, 2
    frame.save(palette_dir / "0.png")
    assert np.array_equal(read_frames(palette_dir, label=True).array[0], indices)
    colour_dir = tmp_path / "colour"
    colour_dir.mkdir()
    Image.fromarray(np.stack([indices * 100] * 3, -1)).save(colour_dir / "0.png")
    with pytest.raises(ImageReadError, match="0.png: a label frame must hold class indices"):
        read_frames(colour_dir, label=True)


def test_folder_named_like_an_image_is_reported_as_a_folder(tmp_path):
    folder = tmp_path / "case_0000.nii.gz"
    folder.mkdir()
    with pytest.raises(ImageReadError, match="is a folder") as err:
        read_volume(folder)
    assert str(folder) in str(err.value)
