"""A literal re-implementation (our own code) of the original MA-SAM's CT path from file to label
map: ``preprocessing/util_script_btcv.py`` (nibabel read, 5-slice stacks, orientation) and
``MA-SAM/test.py`` (windowing, z-score, per-stack min-max, cubic zoom, softmax summed over covering
stacks, argmax, back-transform), driving a masam model object. Used only to check
``masam.infer.original`` against.

nibabel is not installed here: :func:`read_nifti_like_nibabel` reads the NIfTI-1 file itself and
returns what ``nib.load(path).get_fdata()`` returns (float64, index order ``[i, j, k]``), so this
reference does not depend on SimpleITK's axis order.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import zoom

HU_MIN, HU_MAX = -200, 250  # test.py:24-26
DATA_MEAN, DATA_STD = 50.21997497685108, 68.47153712416372
NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}


def read_nifti_like_nibabel(path: Path) -> np.ndarray:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    dims = struct.unpack(endian + "8h", raw[40:56])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    slope, inter = struct.unpack(endian + "2f", raw[112:120])
    shape = dims[1 : 1 + dims[0]]
    count = int(np.prod(shape))
    data = np.frombuffer(raw, endian + NIFTI_TYPES[datatype], count, vox_offset).reshape(shape, order="F")
    data = data.astype(np.float64)
    if slope not in (0.0, 1.0) or inter != 0.0:
        data = data * (slope if slope != 0 else 1.0) + inter
    return data


def five_slice_stacks(img_arr: np.ndarray) -> list[np.ndarray]:
    """util_script_btcv.py:43-55: end slices doubled, every slice the centre of a stack, each stack
    stored as ``flip(rot90(stack, 1, axes=(0, 1)), axis=1)``."""
    img_arr = np.concatenate(
        (img_arr[:, :, 0:1], img_arr[:, :, 0:1], img_arr, img_arr[:, :, -1:], img_arr[:, :, -1:]), -1
    )
    out = []
    for slice_indx in range(2, img_arr.shape[2] - 2):
        slice_arr = img_arr[:, :, slice_indx - 2 : slice_indx + 3]
        out.append(np.flip(np.rot90(slice_arr, k=1, axes=(0, 1)), axis=1))
    return out


def normalise(image_arr: np.ndarray) -> np.ndarray:  # test.py:120-124
    image_arr = np.clip(image_arr, HU_MIN, HU_MAX)
    image_arr = (image_arr - HU_MIN) / (HU_MAX - HU_MIN) * 255.0
    image_arr = np.float32(image_arr)
    image_arr = (image_arr - DATA_MEAN) / DATA_STD
    return (image_arr - image_arr.min()) / (image_arr.max() - image_arr.min() + 0.00000001)


def test_single_volume(image: np.ndarray, net, classes: int, patch_size: int) -> np.ndarray:
    """test.py:28-67: ``image`` ``[n, h, w, 5]`` -> prediction ``[n, h, w]``."""
    n, h, w = image.shape[:3]
    probability = np.zeros((n, h, w, classes + 1), np.float32)
    probability = np.concatenate(
        (probability[0:1], probability[0:1], probability, probability[-1:], probability[-1:]), 0
    )
    avg_cnt = np.ones_like(probability, dtype=np.float32)
    for ind in range(n):
        slice_ = image[ind]
        x, y = slice_.shape[0], slice_.shape[1]
        if x != patch_size or y != patch_size:
            slice_ = zoom(slice_, (patch_size / x, patch_size / y), order=3)  # fails: 3D input, 2 factors
        inputs = torch.from_numpy(slice_).unsqueeze(0).unsqueeze(0).float()  # [1, 1, h, w, 5]
        inputs = inputs.repeat(1, 3, 1, 1, 1).permute(0, 4, 1, 2, 3)  # [1, 5, 3, h, w]
        with torch.no_grad():
            output_masks = net(inputs)["logits"][0]  # [5, K+1, h, w], the original's outputs['masks']
            out_pred = torch.softmax(output_masks, dim=1).permute(0, 2, 3, 1).numpy()
        out_h, out_w = out_pred.shape[1], out_pred.shape[2]
        if x != out_h or y != out_w:
            out_pred = zoom(out_pred, (1.0, x / out_h, y / out_w, 1.0), order=3)
        probability[ind : ind + 5] += out_pred
        avg_cnt[ind : ind + 5] += 1.0
    probability = probability / avg_cnt
    return np.argmax(probability, axis=-1)[2:-2]


def run(path: Path, net, classes: int, patch_size: int) -> np.ndarray:
    """The label map the original would write for ``path``, as a nibabel-ordered array ``[i, j, k]``
    (test.py:75-81 turns it back before saving)."""
    stacks = [normalise(s) for s in five_slice_stacks(read_nifti_like_nibabel(path))]
    prediction = test_single_volume(np.stack(stacks), net, classes, patch_size)
    prediction_data = np.moveaxis(prediction.astype(np.float32), 0, -1)
    return np.rot90(np.flip(prediction_data, axis=1), k=-1, axes=(0, 1))
