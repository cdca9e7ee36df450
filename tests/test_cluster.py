"""Tests for daskred.cluster: the engine choice, progress, memory, and real distributed runs.

The ``cluster`` tests start a real ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1 (ports chosen by the OS, announced through a scheduler file), run
``daskred reduce --scheduler`` on a simulated night, and compare the products with a run
on the local threaded scheduler, pixel for pixel.  Every wait has a deadline and every
process started here is ended in ``finally``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import distributed  # noqa: F401 - loads distributed's config defaults before any dask.config.set
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

import daskred as dr
from daskred.cluster import (
    MemoryPeak,
    _ClusterProgress,
    active_client,
    progress,
    track_memory,
    use_cluster,
    worker_memory,
)
from daskred.errors import ConfigError
from daskred.simulate import simulate

START_TIMEOUT = 60.0  # s for the scheduler file and the workers to appear
RUN_TIMEOUT = 150.0  # s for one `daskred reduce`


# --------------------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _spawn(args: list[str], *, log: Path, cwd: Path) -> subprocess.Popen:
    """Start a process in its own session (so that it and its children can be ended together)."""
    handle = open(log, "wb")
    try:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, env=_env(),
                                start_new_session=True)
    finally:
        handle.close()


def _end(proc: subprocess.Popen) -> None:
    """End a process group started by _spawn: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # children of an already ended leader too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _wait_for(predicate, *, timeout: float, what: str, procs=(), logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc, log in zip(procs, logs):
            if proc.poll() is not None:
                pytest.fail(f"{what}: process {proc.args[:4]} exited with {proc.returncode}:\n"
                            f"{Path(log).read_text()[-3000:]}")
        time.sleep(0.05)
    text = "\n".join(Path(log).read_text()[-2000:] for log in logs)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{text}")


@contextlib.contextmanager
def dask_cluster(folder: Path, *, nworkers: int = 2):
    """A `dask scheduler` and `nworkers` single-threaded `dask worker` processes on 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    elsewhere = folder / "worker-cwd"  # workers run in another folder than the client
    elsewhere.mkdir(exist_ok=True)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        scheduler_file = folder / "scheduler.json"
        logs.append(folder / "scheduler.log")
        procs.append(_spawn([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                            log=logs[-1], cwd=elsewhere))
        _wait_for(scheduler_file.is_file, timeout=START_TIMEOUT, what="the scheduler file", procs=procs, logs=logs)
        address = _wait_for(lambda: _read_address(scheduler_file), timeout=START_TIMEOUT, what="the scheduler address")
        workers = []
        for i in range(nworkers):
            logs.append(folder / f"worker{i}.log")
            procs.append(_spawn([sys.executable, "-m", "dask", "worker", address, "--nworkers", "1",
                                 "--nthreads", "1", "--memory-limit", "2GiB", "--no-dashboard",
                                 "--name", f"w{i}", "--local-directory", str(folder / f"w{i}")],
                                log=logs[-1], cwd=elsewhere))
            workers.append(procs[-1])
        from distributed import Client

        with Client(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(nworkers, timeout=START_TIMEOUT)
        yield {"address": address, "scheduler": procs[0], "workers": workers, "logs": logs}
    finally:
        for proc in reversed(procs):
            _end(proc)


def _read_address(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None  # being written


def _products(out: Path) -> dict[str, list[np.ndarray]]:
    """Pixel data of every HDU of every master and stack, by relative path."""
    result = {}
    for path in sorted([*out.glob("masters/**/*.fits"), *out.glob("stacks/*.fits")]):
        with fits.open(path) as hdul:
            result[str(path.relative_to(out))] = [np.array(h.data) for h in hdul if h.data is not None]
    return result


def _assert_same_products(out: Path, reference: Path) -> None:
    got, want = _products(out), _products(reference)
    assert sorted(got) == sorted(want) and want
    assert any(name.startswith("stacks/") for name in want)
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for a, b in zip(got[name], want[name]):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)  # NaNs compare equal here
            assert np.isfinite(b).any(), name  # not an empty product
    csv = (reference / "photometry" / "zeropoints.csv").read_text()
    assert csv.count("\n") >= 2  # header + at least one zero point
    assert (out / "photometry" / "zeropoints.csv").read_text() == csv


def _reduce_cli(raw: Path, out: Path, config: Path, address: str, *, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "daskred.cli", "reduce", os.path.relpath(raw, cwd), "--out",
            os.path.relpath(out, cwd), "--config", str(config), "--scheduler", address]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A tiny simulated night (one filter, standards) and its reduction on the threaded scheduler."""
    root = tmp_path_factory.mktemp("cluster")
    sim = simulate(root / "sim", scale="tiny", filters=("V",), nights=1, n_bias=3, n_dark=2, n_flat=3,
                   n_science=3, n_standard=2, seed=11)
    config = root / "reduce.toml"
    config.write_text(f'[photometry]\nstandards = "{sim.standards_path}"\n\n[output]\nquicklook = false\n')
    reference = root / "local"
    report = dr.reduce(sim.raw_dir, out=reference, config=dr.PipelineConfig.load(config), verbose=False)
    assert report.scheduler == "threads"
    return {"root": root, "raw": Path(sim.raw_dir), "config": config, "reference": reference}


# --------------------------------------------------------------------------- real clusters
@pytest.mark.cluster
def test_reduce_on_scheduler_and_two_workers_matches_local_run(night, tmp_path):
    with dask_cluster(tmp_path / "cluster") as cluster:
        out = night["root"] / "distributed"
        args = _reduce_cli(night["raw"], out, night["config"], cluster["address"], cwd=night["root"])
        run = subprocess.run(args, cwd=night["root"], env=_env(), capture_output=True, text=True,
                             timeout=RUN_TIMEOUT)
        assert run.returncode == 0, run.stderr[-4000:]
        # both workers ran tasks: each wrote to its log that it started, and the scheduler saw both
        report = json.loads((out / "report.json").read_text())
    assert report["scheduler"] == f"distributed ({cluster['address']}, 2 workers, 2 threads)"
    assert f"dask scheduler {cluster['address']}: 2 workers, 2 threads; dashboard http://" in run.stderr
    assert "tasks" in run.stderr  # progress lines of the distributed run
    _assert_same_products(out, night["reference"])


@pytest.mark.cluster
def test_reduce_survives_a_killed_worker(night, tmp_path):
    import psutil

    out = night["root"] / "killed"
    with dask_cluster(tmp_path / "cluster") as cluster:
        args = _reduce_cli(night["raw"], out, night["config"], cluster["address"], cwd=night["root"])
        log = tmp_path / "reduce.log"
        reducer = _spawn(args, log=log, cwd=night["root"])
        try:
            def first_checkpoint():
                return [p for p in out.glob(".cache/*/*.zarr") if not p.name.startswith(".")]

            _wait_for(first_checkpoint, timeout=RUN_TIMEOUT, what="the first checkpoint", procs=[reducer], logs=[log])
            # the worker process itself (the child of `dask worker`, which is its nanny)
            nanny = psutil.Process(cluster["workers"][0].pid)
            victims = [p for p in nanny.children() if "spawn" in " ".join(p.cmdline())]
            assert len(victims) == 1, [p.cmdline() for p in nanny.children()]
            assert reducer.poll() is None, "the reduction ended before a worker could be killed"
            victims[0].send_signal(signal.SIGKILL)
            victims[0].wait(timeout=10)  # raises psutil.TimeoutExpired if it still runs
            assert not victims[0].is_running()
            reducer.wait(timeout=RUN_TIMEOUT)
        finally:
            _end(reducer)
        scheduler_log = cluster["logs"][0].read_text()
    assert reducer.returncode == 0, log.read_text()[-4000:]
    assert "Remove worker" in scheduler_log  # the scheduler saw the worker die mid-run
    _assert_same_products(out, night["reference"])


# --------------------------------------------------------------------------- engine choice
def test_use_cluster_defaults_to_threads(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with dask.config.set({"scheduler-address": None}), use_cluster() as where:
        assert where == "threads"
        assert dask.config.get("scheduler") == "threads"
        assert active_client() is None
        assert int(da.arange(10, chunks=3).sum().compute()) == 45


@pytest.mark.parametrize("options, match", [
    ({"workers": 0}, "workers must be a positive integer, got 0"),
    ({"workers": 1.5}, "workers must be a positive integer"),
    ({"threads_per_worker": -1}, "threads_per_worker must be a positive integer"),
    ({"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "drop the local options"),
    ({"workers": 1, "memory_limit": "600MiB"}, r"600\.00 MiB per worker is too small.*--memory-limit 1GiB"),
    ({"workers": 1, "memory_limit": 2**29}, r"512\.00 MiB per worker is too small"),
    ({"workers": 1, "memory_limit": 1e-6}, "per worker is too small"),
    ({"workers": 1, "memory_limit": "lots"}, "memory_limit 'lots' is not a size"),
])
def test_use_cluster_rejects_contradictory_options(options, match):
    with pytest.raises(ConfigError, match=match), use_cluster(**options):
        pass  # pragma: no cover


def test_use_cluster_unreachable_scheduler_names_the_fix():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ConfigError, match=rf"cannot connect to the dask scheduler at tcp://127.0.0.1:{port}.*"
                                              "dask scheduler"), use_cluster(scheduler=f"tcp://127.0.0.1:{port}"):
            pass  # pragma: no cover


def test_use_cluster_reads_dask_scheduler_address(monkeypatch):
    """The environment variable is used when no address is given (here: one that refuses)."""
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ConfigError, match="at tcp://127.0.0.1:9 "), use_cluster():
            pass  # pragma: no cover
        # explicit local options win over the environment: no connection is attempted
        with pytest.raises(ConfigError, match="threads_per_worker must be"), use_cluster(threads_per_worker=0):
            pass  # pragma: no cover


def test_use_cluster_tls_without_certificates_names_the_settings():
    with dask.config.set({"distributed.comm.tls.ca-file": None, "distributed.comm.tls.client.cert": None}):
        with pytest.raises(ConfigError, match="distributed.comm.tls.ca-file.*DASK_DISTRIBUTED__COMM__TLS__CA_FILE"):
            with use_cluster(scheduler="tls://127.0.0.1:9"):
                pass  # pragma: no cover


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key (openssl), serving as CA, server and client certificate."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.cluster
def test_use_cluster_tls_scheduler_with_certificates_from_the_dask_config(tmp_path):
    """A TLS scheduler is reached with the certificates named in dask's configuration."""
    from distributed import LocalCluster, Security

    cert, key = _self_signed(tmp_path)
    server = Security(tls_ca_file=str(cert), tls_scheduler_cert=str(cert), tls_scheduler_key=str(key),
                      tls_worker_cert=str(cert), tls_worker_key=str(key), tls_client_cert=str(cert),
                      tls_client_key=str(key), require_encryption=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      security=server, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        settings = {"distributed.comm.tls.ca-file": str(cert), "distributed.comm.tls.client.cert": str(cert),
                    "distributed.comm.tls.client.key": str(key)}
        with dask.config.set(settings), use_cluster(scheduler=address, verbose=False) as where:
            assert where == f"distributed ({address}, 1 workers, 1 threads)"
            assert int(da.arange(10, chunks=3).sum().compute()) == 45
            assert active_client().scheduler.address == address


@pytest.mark.cluster
def test_use_cluster_local_workers_and_worker_memory(capsys):
    with use_cluster(workers=1, threads_per_worker=1, memory_limit="1GiB") as where:
        assert where.startswith("distributed (tcp://127.0.0.1:") and where.endswith("1 workers, 1 threads)")
        client = active_client()
        assert client is not None
        (limit,) = [w["memory_limit"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
        assert limit == 2**30
        memory = worker_memory()
        assert list(memory) == list(client.scheduler_info(n_workers=-1)["workers"])
        assert all(20 < mb < 2048 for mb in memory.values())  # a Python worker process, in MiB

        def hold(n):
            block = np.ones(n // 8)  # n bytes held while the task sleeps (sampled every 0.5 s)
            time.sleep(1.2)
            return float(block.sum())

        with track_memory() as peak:
            assert client.submit(hold, 300 * 2**20, pure=False).result(timeout=60) == 300 * 2**20 / 8
        assert set(peak.per_process) == set(memory)
        assert peak.peak_mb > min(memory.values()) + 250
    assert active_client() is None
    assert "dashboard http://" in capsys.readouterr().err


# --------------------------------------------------------------------------- progress and memory
def test_progress_local_shows_a_bar_and_computes_the_same(capsys):
    x = da.random.default_rng(0).random((300, 200), chunks=(70, 90))
    with use_cluster(), progress("[daskred] test", interval=0.01):
        value = float(x.sum().compute())
    assert value == pytest.approx(float(x.compute().sum()), rel=1e-12)
    err = capsys.readouterr().err
    assert err.startswith("[daskred] test\n")


def test_progress_nested_blocks_show_one_display(capsys):
    with progress("outer"), progress("inner"):
        pass
    err = capsys.readouterr().err
    assert "outer" in err and "inner" not in err


def test_progress_disabled_prints_nothing(capsys):
    with progress("hidden", enabled=False):
        da.ones(5, chunks=2).sum().compute()
    assert capsys.readouterr().err == ""


class _FakeClient:
    """Stands for a distributed client: the scheduler's cumulative task counts, step by step."""

    def __init__(self, states):
        self.states = list(states)

    def run_on_scheduler(self, function):
        assert function.__name__ == "_task_counts"
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def _counts(given, done, erred=0, processing=0, workers=2, memory=2**30):
    return {"given": given, "done": done, "erred": erred, "processing": processing, "workers": workers,
            "memory": memory}


def test_cluster_progress_counts_tasks_since_the_block_began():
    out = io.StringIO()
    client = _FakeClient([_counts(100, 100), _counts(160, 160, erred=1)])
    with _ClusterProgress(client, label="[daskred] stack", interval=0.1, out=out) as shown:
        line = shown._line(_counts(130, 110, processing=2))
    assert line == "[daskred] stack: 10/30 tasks, 2 running, 2 workers, 1.00 GiB"
    assert out.getvalue().splitlines()[-1] == "[daskred] stack: 60/60 tasks, 0 running, 2 workers, 1.00 GiB, 1 erred"


def test_cluster_progress_is_silent_when_nothing_is_computed():
    out = io.StringIO()
    with _ClusterProgress(_FakeClient([_counts(40, 40)]), label="[daskred] scan", interval=0.1, out=out):
        pass
    assert out.getvalue() == ""


def test_cluster_progress_never_fails_the_run():
    class Broken:
        def run_on_scheduler(self, function):
            raise OSError("scheduler gone")

    out = io.StringIO()
    with _ClusterProgress(Broken(), label="x", interval=0.1, out=out):
        value = 1 + 1
    assert value == 2 and out.getvalue() == ""


def test_task_counts_sums_prefixes_of_a_scheduler():
    from types import SimpleNamespace as NS

    prefixes = {"a": NS(state_counts={"waiting": 5, "memory": 4}, states={"processing": 1}),
                "b": NS(state_counts={"waiting": 3, "memory": 3, "erred": 1}, states={"processing": 0})}
    workers = {"w": NS(memory=NS(process=10)), "v": NS(memory=NS(process=20))}
    from daskred.cluster import _task_counts

    counts = _task_counts(NS(task_prefixes=prefixes, workers=workers))
    assert counts == {"given": 8, "done": 7, "erred": 1, "processing": 1, "workers": 2, "memory": 30.0}


def test_worker_memory_and_track_memory_locally():
    import psutil

    assert active_client() is None
    now = psutil.Process().memory_info().rss / 2**20
    (local,) = worker_memory().items()
    assert local[0] == "local" and abs(local[1] - now) < 200
    with track_memory(interval=0.01) as peak:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB touched
        time.sleep(0.1)
        del block
    assert list(peak.per_process) == ["local"]
    assert peak.peak_mb > now + 150
    assert peak.total_mb == peak.peak_mb


def test_memory_peak_summaries():
    peak = MemoryPeak({"a": 100.04, "b": 250.0})
    assert peak.peak_mb == 250.0 and peak.total_mb == 350.0
    assert MemoryPeak().peak_mb == 0.0 and MemoryPeak().total_mb == 0.0


@pytest.mark.cluster
def test_combine_never_uses_peer_to_peer_rechunking():
    """On a cluster dask turns big rechunks into P2P transfers that buffer far more than one
    block per task; combine's frame-to-band rechunk must stay task-based (memory per task
    bounded by its band)."""
    from dask.array.rechunk import _choose_rechunk_method
    from distributed import Client, LocalCluster

    frames = xr.DataArray(da.ones((300, 97, 211), chunks=(1, 97, 211), dtype=np.float32), dims=("frame", "y", "x"))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster):
        # what dask itself would choose for this rechunk here
        assert _choose_rechunk_method(((1,) * 300, (97,), (211,)), ((300,), (1,) * 97, (211,))) == "p2p"
        image = dr.combine(frames, method="median", band=1)
        names = {str(key[0] if isinstance(key, tuple) else key) for key in image.data.__dask_graph__()}
        assert any(name.startswith("rechunk-merge") for name in names)
        assert not any("p2p" in name for name in names), sorted(names)[:10]
        np.testing.assert_array_equal(image.values, np.ones((97, 211), np.float32))
