"""The simulated user of benchmarks/interactive.py: each click at the deepest point of the largest
3D error, the Dice curve it gives, and NoC."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import benchmark_modules


@pytest.fixture(scope="module")
def bench():
    with benchmark_modules("interactive") as (module,):
        yield module


class PaintingSession:
    """A stand-in session: an include click paints the reference's component under it on that
    slice, an exclude click clears the wrong voxels of its slice."""

    def __init__(self, reference: np.ndarray, label: int):
        self.reference, self.label = reference, label
        self.labels = np.zeros_like(reference)
        self.clicks = []

    def add_points(self, points):
        (x, y, z, include), = points
        self.clicks.append((z, y, x, include))
        if include:
            self.labels[z][self.reference[z] == self.label] = self.label
        else:
            self.labels[z][self.reference[z] != self.label] = 0

    def result(self):
        return self.labels


def test_the_user_clicks_the_deepest_missed_voxel_and_the_curve_reaches_one(bench):
    reference = np.zeros((9, 20, 20), np.uint8)
    reference[1:8, 4:11, 3:10] = 2  # a 7-voxel cube lesion
    session = PaintingSession(reference, 2)
    scores = bench.simulate(session, reference, 2, "clicks", 8)
    z, y, x, include = session.clicks[0]
    assert include == 1 and (z, y, x) == (4, 7, 6)  # its centre: the farthest from every face
    assert scores[0] == 0.0 and scores[1] == pytest.approx(2 * 49 / (49 + 343))  # one slice of seven painted
    assert scores[7] == 1.0 and scores[8] == 1.0 and len(session.clicks) == 7  # nothing left to click


def test_noc_is_the_first_count_reaching_the_threshold_capped_at_twenty(bench):
    assert bench.clicks_to_reach([0.1, 0.5, 0.82, 0.9], 0.8) == 2
    assert bench.clicks_to_reach([0.1, 0.5, 0.82, 0.9], 0.85) == 3
    assert bench.clicks_to_reach([0.1, 0.5], 0.85) == bench.MAX_CLICKS == 20
