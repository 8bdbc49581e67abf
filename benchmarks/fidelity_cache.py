"""Issue 24, findings 1 and 3: how far the training inputs of the paper presets are from the
original loader's (datasets/dataset.py:370-378: CT clip, x255, z-score, per-stack min-max, applied
to every pickle), measured on the 8-bit values the augmentation ops work on ((x * 255) truncated).

1. The float16 cache: every HU level in the window (CT) and every 8-bit value (RGB frames), as the
   original computes them from a stack that spans the window (min-max then the identity), against
   masam's cache value in float16 (today) and in float32 (twice the size).
3. Prostate MR: the original's per-stack min-max on percentile-normalised volumes, which masam's
   prostate preset leaves out, on the shared real MR volumes.

    PYTHONPATH=src python benchmarks/fidelity_cache.py   # writes benchmarks/results/fidelity_cache.json
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from results_file import write_result

from masam.data.convention import minmax_stack, window_ct
from masam.data.normalize import Normalization, scale_stacks
from masam.data.slices import stack_indices

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MR_VOLUMES = ("totalsegmentator/example_mr_sm.nii.gz", "pyradiomics/brain1_image.nrrd")


def u8(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float32) * np.float32(255.0)).astype(np.uint8)


def original_values(raw: np.ndarray, extremes: tuple[float, float]) -> np.ndarray:
    """The original loader's values of ``raw`` in a stack that also holds ``extremes``."""
    stack = np.concatenate([np.asarray(extremes, np.float64), raw.astype(np.float64)])
    return minmax_stack(window_ct(stack))[2:]


def cache_comparison(original: np.ndarray, ours: np.ndarray) -> dict:
    """``ours`` through a float16 and a float32 cache against ``original``."""
    out = {"levels": int(original.size)}
    for name, dtype in (("float16", np.float16), ("float32", np.float32)):
        cached = ours.astype(dtype).astype(np.float32)
        out[f"{name}_max_abs_difference"] = float(np.abs(cached - original).max())
        out[f"{name}_8bit_levels_differing"] = int((u8(cached) != u8(original)).sum())
    return out


def mr_stack_minmax(path: Path) -> dict:
    """Per-stack min-max (the original's loader) against none (masam's prostate preset)."""
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    normalised = Normalization("MRI", percentile=99)(volume)
    changed_stacks, differing, total, largest = 0, 0, 0, 0.0
    for centre in range(len(normalised)):
        stack = normalised[stack_indices(len(normalised), centre)]
        original = minmax_stack(window_ct(stack.astype(np.float64)))
        largest = max(largest, float(np.abs(original - stack).max()))
        changed_stacks += bool(stack.min() > 0 or stack.max() < 1)
        differing += int((u8(original) != u8(stack)).sum())
        total += stack.size
    return {
        "slices": len(normalised), "stacks_not_spanning_0_to_1": changed_stacks,
        "max_abs_difference": largest, "share_of_8bit_values_differing": differing / total,
    }  # fmt: skip


def main() -> None:
    hu = np.arange(-200, 251, dtype=np.float64)
    rgb = np.arange(256, dtype=np.float64)
    released_rgb = original_values(rgb, (0.0, 255.0))  # the CT clip turns 251..255 into 250
    # the presets since issue 24: float32 cache, then the stack's own min-max (scale_stacks)
    stack = np.concatenate([[-1024.0, 3071.0], hu])
    presets = Normalization("CT", stack_minmax=True)  # the original's arithmetic before the min-max
    ours = scale_stacks(torch.from_numpy(presets(stack)[None, :, None, None])).numpy().ravel()[2:]
    original = original_values(hu, (-1024.0, 3071.0))
    result = {
        "ct_hu_levels_in_window": cache_comparison(original, Normalization("CT")(hu)),
        "ct_with_stack_minmax_8bit_levels_differing": int((u8(ours) != u8(original)).sum()),
        "ct_with_stack_minmax_max_abs_difference": float(np.abs(ours - original).max()),
        # against v / 255 in float32 (the frame's own values; the released loader is not used for frames)
        "rgb_8bit_values": cache_comparison(Normalization("RGB")(rgb), Normalization("RGB")(rgb)),
        "rgb_released_loader_8bit_values_differing_from_v_over_255": int(
            (u8(released_rgb) != u8(Normalization("RGB")(rgb))).sum()
        ),
        "prostate_mr_per_stack_minmax": {p: mr_stack_minmax(SHARED / p) for p in MR_VOLUMES},
    }
    write_result(ROOT / "benchmarks" / "results" / "fidelity_cache.json", result)


if __name__ == "__main__":
    main()
