"""Tests for daskred.bench_measure: runs measured in fresh processes, against a baseline."""

from __future__ import annotations

import pytest

from daskred import bench


def _row(result, strategy, implementation="daskred"):
    return next(r for r in result.rows if r["strategy"] == strategy and r["implementation"] == implementation)


def test_isolated_runs_measure_their_own_memory():
    result = bench.run(frames=5, size=(48, 64), methods=("median",), baselines=("numpy",), sweep=(),
                       out=None, isolate=True)
    mine, base = _row(result, "median"), _row(result, "median", "numpy")
    assert "error" not in mine and "error" not in base
    assert mine["memory_method"] in ("high-water mark", "ru_maxrss")
    assert mine["peak_mb"] > 0 and mine["band_rows"] == 48
    assert mine["agreement_numpy"] <= 1e-6
    assert mine["noise_ratio"] == pytest.approx(1.2, abs=0.25)
