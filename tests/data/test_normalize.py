"""The MRI rules of masam.data.normalize (issue 27): the robust window against an independent
computation, its indifference to a lesion's size, and what a spec without the rule means."""

import numpy as np
import pytest
import torch

from masam.data.normalize import ROBUST_WINDOW, Normalization, robust_window
from masam.errors import ConfigError


def _head(lesion_share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A skull-stripped head as BraTS's: background at the minimum (five sixths of the volume),
    tissue around 0 (sd 1), and a lesion 2.5 brighter taking ``lesion_share`` of the tissue."""
    rng = np.random.default_rng(seed)
    volume = np.full((40, 60, 60), -4.0, np.float32)
    brain = np.zeros(volume.shape, bool)
    brain[5:35, 10:40, 10:40] = True
    volume[brain] = rng.normal(0.0, 1.0, brain.sum()).clip(-3.5, 3.5)
    lesion = brain & (rng.random(volume.shape) < lesion_share)
    volume[lesion] = rng.normal(2.5, 0.5, lesion.sum())
    return volume, brain & ~lesion, lesion


def test_robust_window_is_the_foregrounds_median_and_iqr_computed_independently():
    volume, _, _ = _head(0.05)
    foreground = torch.from_numpy(volume[volume > volume.min()]).double()
    q25, median, q75 = (torch.quantile(foreground, q).item() for q in (0.25, 0.5, 0.75))
    low, high = median + ROBUST_WINDOW[0] * (q75 - q25), median + ROBUST_WINDOW[1] * (q75 - q25)
    assert robust_window(volume) == pytest.approx((low, high), rel=1e-6)
    out = Normalization("MRI", mri_rule="robust")(volume)
    expected = ((volume.astype(np.float64) - low) / (high - low)).clip(0, 1)
    assert out.dtype == np.float32 and np.allclose(out, expected, atol=1e-6)


def test_a_large_lesion_moves_tissue_under_the_percentile_rule_and_hardly_under_the_robust_one():
    """The cause of pat0006's misses (docs/learning.md): the 99th percentile of a mostly-background
    volume lands inside a large lesion, so the same tissue gets a lower input value."""
    small, tissue_small, _ = _head(0.02)
    large, tissue_large, lesion = _head(0.20)
    shift = {}
    for rule in ("percentile", "robust"):
        norm = Normalization("MRI", mri_rule=rule)
        shift[rule] = abs(float(np.median(norm(small)[tissue_small])) - float(np.median(norm(large)[tissue_large])))
        assert float(np.median(norm(large)[lesion])) > float(np.percentile(norm(large)[tissue_large], 90))
    assert shift["percentile"] > 0.08 and shift["robust"] < 0.04, shift  # 0.104 and 0.024


def test_an_image_without_foreground_gives_zeros_and_an_unknown_rule_is_refused():
    assert not Normalization("MRI", mri_rule="robust")(np.full((3, 4, 4), 7.0)).any()
    with pytest.raises(ConfigError, match="unknown MRI normalisation 'zscore'"):
        Normalization("MRI", mri_rule="zscore")


def test_a_spec_written_before_the_rule_existed_means_the_percentile_rule():
    stored = Normalization("MRI", percentile=99.0).to_dict()
    del stored["mri_rule"]
    volume, _, _ = _head(0.05)
    assert np.array_equal(Normalization(**stored)(volume), Normalization("MRI", mri_rule="percentile")(volume))
