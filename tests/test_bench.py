"""Tests for daskred.bench: quality figures against the simulated truth, baselines, outputs, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from daskred import bench
from daskred.errors import ConfigError

from conftest import write_frames

STRATEGIES = ("mean", "median", "sigma", "mad", "minmax", "ccdclip")
N, SHAPE = 15, (101, 140)  # odd, non-square; ~14 000 pixels for 1 % noise precision


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """One in-process benchmark of six strategies with both baselines and the frames sweep."""
    out = tmp_path_factory.mktemp("bench")
    return bench.run(frames=N, size=SHAPE, methods=STRATEGIES, sweep=("frames",),
                     baselines=("numpy", "ccdproc"), out=out, isolate=False, seed=3)


def _row(result, strategy, implementation="daskred"):
    return next(r for r in result.rows if r["strategy"] == strategy and r["implementation"] == implementation)


# ------------------------------------------------------------------ quality against the truth
def test_mean_noise_is_the_ideal_sigma_over_sqrt_n(result):
    # pixels no artifact touched: a plain mean of Gaussian frames has noise sigma / sqrt(N)
    assert _row(result, "mean")["noise_ratio"] == pytest.approx(1.0, abs=0.03)
    assert abs(_row(result, "mean")["bias_sigma"]) < 0.05


def test_median_noise_is_about_1_25_times_the_mean(result):
    ratio = _row(result, "median")["noise_ratio"]
    assert 1.15 <= ratio <= 1.35
    assert ratio / _row(result, "mean")["noise_ratio"] == pytest.approx(1.22, abs=0.08)


def test_sigma_clipping_removes_cosmic_rays_that_a_mean_keeps(result):
    assert result.truth["artifact_pixels_counted"]["cosmic"] >= 100  # enough to resolve 1 %
    mean, sigma = _row(result, "mean"), _row(result, "sigma")
    assert mean["survive_cosmic"] >= 0.99
    assert mean["survive_hot"] >= 0.99 and mean["survive_trail"] >= 0.99
    assert sigma["survive_cosmic"] <= 0.01
    assert sigma["survive_hot"] <= 0.01 and sigma["survive_trail"] <= 0.01
    assert sigma["noise_ratio"] == pytest.approx(1.0, abs=0.03)  # and costs almost no noise
    assert _row(result, "median")["survive_cosmic"] <= 0.01


def test_rejection_maps_give_the_good_pixels_rejected(result):
    # min/max clipping drops exactly 2 of the N values of every pixel
    assert _row(result, "minmax")["rejected_good"] == pytest.approx(2 / N, rel=1e-12)
    assert _row(result, "mean")["rejected_good"] == 0.0
    # 3-sigma clipping of Gaussian values rejects a few per thousand
    assert 0.0 < _row(result, "sigma")["rejected_good"] < 0.01
    assert 0.0 < _row(result, "ccdclip")["rejected_good"] < 0.02


def test_faint_star_signal_to_noise(result):
    mean, median = _row(result, "sigma"), _row(result, "median")
    expected = 3.0 * math.sqrt(N)  # S/N 3 in one frame, background limited
    assert mean["faint_snr"] == pytest.approx(expected, rel=0.15)
    assert mean["faint_flux_ratio"] == pytest.approx(1.0, abs=0.05)
    assert median["faint_snr"] < mean["faint_snr"]


# ------------------------------------------------------------------ baselines
@pytest.mark.parametrize("strategy", ["mean", "median", "sigma", "mad", "minmax"])
def test_baselines_agree_with_daskred(result, strategy):
    row = _row(result, strategy)
    assert row["agreement_numpy"] <= 1e-5
    assert row["agreement_ccdproc"] <= 1e-5
    assert "time_vs_numpy" in row and "time_vs_ccdproc" in row
    assert _row(result, strategy, "ccdproc")["seconds"] > 0


def test_ccdproc_sigma_clipping_is_compared_at_one_iteration(result):
    row = _row(result, "sigma")
    assert "maxiters=1" in row["ccdproc_note"]
    # one iteration leaves artifacts that five remove: the comparison is not against itself
    assert _row(result, "sigma", "ccdproc")["survive_cosmic"] > row["survive_cosmic"]
    assert not any(r["implementation"] == "ccdproc" for r in result.rows if r["strategy"] == "ccdclip")


# ------------------------------------------------------------------ outputs
def test_json_markdown_and_plots_are_written(result):
    files = result.files
    data = json.loads(open(files["json"]).read())
    assert data["config"]["frames"] == N and data["machine"]["cores"] >= 1
    assert data["machine"]["load_average_start"] is not None
    assert {r["strategy"] for r in data["rows"]} == set(STRATEGIES)
    text = open(files["markdown"]).read()
    assert "| strategy | implementation | time (s)" in text and "## Sweep: frames" in text
    assert result.to_markdown() == text
    import matplotlib.image

    for key in ("noise_vs_strategy", "time_vs_frames", "memory_vs_frames"):
        png = matplotlib.image.imread(files[key])
        assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100


def test_frames_sweep_and_ratios(result):
    rows = result.sweeps["frames"]
    assert sorted({r["frames"] for r in rows}) == [3, 7, 15]
    assert {r["implementation"] for r in rows} == {"daskred", "numpy"}
    assert all(r["seconds"] > 0 and r["peak_mb"] >= 0 for r in rows)


def test_summary_ranks_clean_strategies_first(result):
    text = result.summary()
    lines = [line.split()[1] for line in text.splitlines()[1:] if line.strip()[:1].isdigit()]
    assert lines.index("sigma") < lines.index("mean")
    assert lines[-1] in ("mean", "minmax")


def test_user_frames_without_truth(tmp_path):
    rng = np.random.default_rng(4)
    cube = rng.normal(500.0, 10.0, (7, 41, 57))
    write_frames(tmp_path / "raw", cube)
    result = bench.run(tmp_path / "raw", methods=("mean", "median", "ccdclip"), baselines=("numpy",),
                       sweep=("frames",), out=tmp_path / "out", isolate=False)
    assert result.truth is None
    assert any("ccdclip: skipped" in n for n in result.notes)
    median = _row(result, "median")
    assert median["noise_vs_mean"] == pytest.approx(1.2, abs=0.15)
    assert median["agreement_numpy"] <= 1e-6
    assert (tmp_path / "out" / "bench.md").exists() and not (tmp_path / "out" / "noise_vs_strategy.png").exists()


# ------------------------------------------------------------------ command line and errors
def test_cli_quick_run_writes_everything(tmp_path, capsys):
    code = bench.main(["--quick", "--in-process", "--baselines", "numpy", "--frames", "5", "--size", "48x64",
                       "--methods", "mean", "median",
                       "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr()
    assert "ranked" in out.out and "wrote" in out.out
    assert "median" in out.err  # one progress line per run
    for name in ("bench.json", "bench.md", "time_vs_frames.png", "memory_vs_frames.png", "noise_vs_strategy.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ("nope",)}, "unknown strategy 'nope'"),
        ({"scheduler": "gpu"}, "scheduler='gpu' is not supported"),
        ({"sweep": ("colour",)}, "sweep='colour'"),
        ({"frames": 2}, "at least 3"),
        ({"size": (8, 100)}, "at least 16"),
        ({"chunks": (0,)}, "band heights"),
        ({"methods": {"x": {"method": "mean", "klip": "sigma"}}}, "'klip' is not a daskred.combine keyword"),
        ({"methods": {"x": {"method": "mean", "clip": "sigmaa"}}}, "strategy 'x': clip='sigmaa'"),
        ({"data": "somewhere", "sweep": ("size",)}, "needs simulated frames"),
    ],
)
def test_errors_name_the_fix(kwargs, match):
    data = kwargs.pop("data", None)
    with pytest.raises(ConfigError, match=match):
        bench.run(data, out=None, isolate=False, **kwargs)


def test_cli_rejects_a_bad_size(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--size", "12by3"])
    assert "512x768" in capsys.readouterr().err
