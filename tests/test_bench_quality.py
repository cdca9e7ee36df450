"""Tests for daskred.bench_quality: the simulated truth, the quality figures, result agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from daskred import bench_quality


def test_relative_difference():
    a = np.array([[1.0, 2.0], [np.nan, 4.0]])
    assert bench_quality._relative_difference(a, a) == 0.0
    assert bench_quality._relative_difference(a * (1 + 1e-4), a) == pytest.approx(1e-4)
    b = a.copy()
    b[0, 0] = np.nan
    assert bench_quality._relative_difference(a, b) == math.inf


# ------------------------------------------------------------------ the metric and the simulation
def test_quality_of_the_truth_itself_and_of_a_biased_image(tmp_path):
    paths, truth = bench_quality._simulate(tmp_path, frames=9, shape=(64, 96), seed=1)
    perfect = bench_quality._quality(truth.image, None, truth, 9)
    assert perfect["noise_ratio"] == 0.0 and perfect["bias_sigma"] == 0.0
    assert perfect["survive_cosmic"] == 0.0
    shifted = bench_quality._quality(truth.image + 10 * truth.sigma / 3.0, None, truth, 9)  # +10 ideal sigma
    assert shifted["bias_sigma"] == pytest.approx(10.0)
    assert shifted["survive_cosmic"] == shifted["survive_hot"] == 1.0


def test_simulated_frames_follow_their_truth(tmp_path):
    paths, truth = bench_quality._simulate(tmp_path, frames=4, shape=(64, 96), seed=2)
    assert len(paths) == 4
    ev = truth.events
    for i, path in enumerate(paths):
        data = fits.getdata(path).astype(np.float64)
        assert fits.getheader(path)["GAIN"] == 2.0
        deposit = np.zeros_like(data)
        sel = ev["frame"] == i
        np.add.at(deposit, (ev["y"][sel], ev["x"][sel]), ev["amplitude"][sel])
        z = (data - truth.image - deposit) / truth.sigma
        assert abs(z.mean()) < 0.03 and z.std() == pytest.approx(1.0, abs=0.03)
    # hot pixels follow the detector: the same defect lands on different sky pixels per frame
    hot = [set(zip(ev["y"][(ev["kind"] == 2) & (ev["frame"] == i)], ev["x"][(ev["kind"] == 2) & (ev["frame"] == i)]))
           for i in range(4)]
    assert len(hot[0] & hot[1]) < 0.2 * len(hot[0])
