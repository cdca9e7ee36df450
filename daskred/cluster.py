"""Where graphs run, how their progress is shown, and how much memory they take.

Nothing in the stages knows which scheduler runs them: library functions build graphs,
and the few places that compute (writers, photometry/astrometry fits, the pipeline) do so
inside :func:`use_cluster` and :func:`progress`, which work the same for dask's threaded
scheduler in this process, a ``distributed.LocalCluster`` started for the run, or any
running ``dask.distributed`` scheduler (``dask scheduler`` / ``dask worker`` by hand,
dask-jobqueue on Slurm or PBS, dask-kubernetes...).

Choosing the engine
-------------------
* ``scheduler="tcp://host:8786"`` (or the ``DASK_SCHEDULER_ADDRESS`` environment variable,
  or dask's ``scheduler-address`` setting): connect to that scheduler.  A ``tls://``
  address uses the certificates of dask's security settings
  (``distributed.comm.tls.ca-file``, ``distributed.comm.tls.client.cert`` and
  ``.client.key``, e.g. from ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``) or an explicit
  ``distributed.Security``.  Inputs, cache and outputs must then be on a filesystem that
  every worker sees at the same path: workers read the raw frames and write the
  checkpoints and products themselves; nothing but paths and parameters travels in the
  graphs.
* ``workers`` / ``threads_per_worker`` / ``memory_limit``: start a ``LocalCluster`` of
  worker processes for the run (each worker process gets one thread by default).
* neither: dask's threaded scheduler, one thread per core.  It is the default because it
  is the faster of the two on one machine for the pipeline's stages (their kernels
  release the GIL, and a process cluster pays start-up and data transfer between
  processes: a tiny simulated night reduced in 13 s with threads and in 42 s with a
  two-process ``LocalCluster`` on the same two cores).

Kernels with their own thread pools (astroscrappy's OpenMP, BLAS) are limited to one
thread inside a task by the stages themselves (threadpoolctl), and dask's nanny starts
worker processes with ``OMP_NUM_THREADS=1`` and friends.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["MemoryPeak", "active_client", "progress", "track_memory", "use_cluster", "worker_memory"]

# Set while a progress display is shown, so that nested ``progress`` blocks add nothing.
_SHOWING: contextvars.ContextVar[bool] = contextvars.ContextVar("daskred_progress_showing", default=False)


def active_client() -> Any:
    """Return the current ``distributed.Client``, or None when graphs run on the local scheduler.

    Examples
    --------
    >>> active_client() is None  # no client started
    True
    """
    try:
        from distributed import get_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return get_client()
    except ValueError:
        return None


# --------------------------------------------------------------------------- engine
def _scheduler_address(scheduler: str | None) -> str | None:
    """The address to connect to: the argument, then DASK_SCHEDULER_ADDRESS, then dask's config."""
    if scheduler:
        return scheduler
    if os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return os.environ["DASK_SCHEDULER_ADDRESS"]
    import dask

    return dask.config.get("scheduler-address", None) or None


def _security_for(address: str, security: Any) -> Any:
    """The ``distributed.Security`` to connect with: given, or from dask's TLS settings."""
    if security is not None or not address.startswith("tls://"):
        return security
    from distributed import Security

    security = Security()  # reads distributed.comm.tls.* from the dask configuration
    if not (security.tls_ca_file and security.tls_client_cert):
        raise ConfigError(
            f"scheduler {address} asks for TLS, but the dask configuration names no certificates; set "
            "distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and distributed.comm.tls.client.key "
            "(e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE=ca.pem DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=cert.pem "
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=key.pem) or pass security=distributed.Security(...)"
        )
    return security


def _check_sizes(workers: int | None, threads_per_worker: int | None) -> None:
    for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


#: Smallest memory limit a local worker is started with.  A worker's own footprint (Python,
#: numpy, astropy, photutils, numba kernels) is about 500 MiB before it holds any data, and
#: dask pauses a worker at 80 % of its limit, so below this a worker pauses for ever.
MIN_WORKER_MEMORY = 2**30


def _check_memory_limit(memory_limit: str | float | None) -> None:
    """Refuse a per-worker limit too small for a daskred worker to run at all."""
    from dask.utils import format_bytes, parse_bytes

    if memory_limit is None or memory_limit == "auto" or memory_limit == 0:
        return
    try:
        if isinstance(memory_limit, str):
            limit = parse_bytes(memory_limit)
        elif isinstance(memory_limit, bool):
            raise ValueError
        else:
            limit = float(memory_limit)
            if 0 < limit <= 1:
                import psutil

                limit *= psutil.virtual_memory().total
    except (ValueError, TypeError) as err:
        raise ConfigError(f"memory_limit {memory_limit!r} is not a size; give e.g. '4GiB', bytes, "
                          "or a fraction of the machine's memory such as 0.5") from err
    if limit < MIN_WORKER_MEMORY:
        raise ConfigError(
            f"a memory limit of {format_bytes(limit)} per worker is too small: a daskred worker uses about "
            f"500 MiB before it holds any data and dask pauses it at 80 % of its limit; give each worker at "
            f"least {format_bytes(MIN_WORKER_MEMORY)} (--memory-limit 1GiB), or fewer workers more memory each"
        )


@contextlib.contextmanager
def use_cluster(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | float | None = None,
    scheduler: str | None = None,
    security: Any = None,
    wait_for_workers: float = 60.0,
    verbose: bool = True,
) -> Iterator[str]:
    """Run the graphs computed inside the block on the chosen engine; yield its description.

    Parameters
    ----------
    workers : int, optional
        Start a ``distributed.LocalCluster`` with that many worker processes.
    threads_per_worker : int, optional
        Threads of each local worker process (1 when only ``workers`` is given; with only
        this option, as many workers as fit the cores).
    memory_limit : str or float, optional
        Memory limit of each local worker (``"4GB"``, bytes, or a fraction of the machine);
        ``"auto"`` splits the machine's memory between the workers.  At least
        :data:`MIN_WORKER_MEMORY` (1 GiB).
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``, ``tls://host:8786``); by default
        the ``DASK_SCHEDULER_ADDRESS`` environment variable or dask's ``scheduler-address``
        setting, when set.  An explicit ``workers`` wins over the environment.
    security : distributed.Security, optional
        Certificates for a ``tls://`` scheduler; by default those of dask's
        ``distributed.comm.tls`` settings.
    wait_for_workers : float
        Seconds to wait for a running scheduler to have at least one worker.
    verbose : bool
        Print the scheduler, its workers and the dashboard address on stderr.

    Yields
    ------
    str
        ``"threads"``, or ``"distributed (<address>, N workers, T threads)"``.

    Raises
    ------
    ConfigError
        Options that contradict each other, a memory limit below 1 GiB per worker, a
        ``tls://`` address without certificates, a scheduler that cannot be reached or has
        no workers.

    Notes
    -----
    Neither option given: dask's threaded scheduler (the fastest on one machine).  A
    script that starts a ``LocalCluster`` (``workers=...``) must guard its entry point with
    ``if __name__ == "__main__":``, because worker processes are spawned.

    Examples
    --------
    >>> with use_cluster() as where:
    ...     where
    'threads'
    """
    import dask

    _check_sizes(workers, threads_per_worker)
    _check_memory_limit(memory_limit)
    local_options = workers is not None or threads_per_worker is not None or memory_limit is not None
    if scheduler and local_options:
        raise ConfigError(
            "a scheduler address was given together with workers/threads_per_worker/memory_limit; the workers of "
            "a running scheduler are started with `dask worker ADDRESS --nworkers N --nthreads T --memory-limit X`, "
            "so drop the local options (or drop the address to start a local cluster)"
        )
    address = None if local_options else _scheduler_address(scheduler)
    if address is None and not local_options:
        with dask.config.set(scheduler="threads"):
            yield "threads"
        return

    from distributed import Client, LocalCluster

    cluster = None
    if address is not None:
        try:
            client = Client(address, security=_security_for(address, security))
        except (OSError, TimeoutError) as err:
            raise ConfigError(
                f"cannot connect to the dask scheduler at {address} ({err}); start one with `dask scheduler` "
                "or correct --scheduler / DASK_SCHEDULER_ADDRESS"
            ) from err
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker or (1 if workers else None),
            memory_limit="auto" if memory_limit is None else memory_limit,
            processes=True,
            dashboard_address=":0",
        )
        client = Client(cluster)
    try:
        try:
            client.wait_for_workers(1, timeout=wait_for_workers)
        except TimeoutError as err:
            raise ConfigError(
                f"the dask scheduler at {client.scheduler.address} has no workers after {wait_for_workers:g} s; "
                f"start some with `dask worker {client.scheduler.address}`"
            ) from err
        info = client.scheduler_info(n_workers=-1)
        nworkers = len(info["workers"])
        nthreads = sum(w["nthreads"] for w in info["workers"].values())
        description = f"distributed ({client.scheduler.address}, {nworkers} workers, {nthreads} threads)"
        if verbose:
            link = client.dashboard_link if "dashboard" in info.get("services", {}) else ""
            print(f"[daskred] dask scheduler {client.scheduler.address}: {nworkers} workers, {nthreads} threads"
                  + (f"; dashboard {link}" if link else ""), file=sys.stderr, flush=True)
        with client.as_current(), dask.config.set(scheduler="dask.distributed"):
            yield description
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- progress
@contextlib.contextmanager
def progress(label: str = "", *, enabled: bool = True, interval: float = 0.5) -> Iterator[None]:
    """Show progress of the graphs computed inside the block, on stderr.

    Parameters
    ----------
    label : str
        Printed first (e.g. the stage name).
    enabled : bool
        False shows nothing.
    interval : float
        Seconds between updates.

    Notes
    -----
    With the local scheduler a :class:`dask.diagnostics.ProgressBar` is shown.  With a
    distributed client, a line counts the tasks the scheduler has finished out of those
    it has been given since the block began (tasks recomputed after a lost worker count
    again), with the number of workers and their memory; on a terminal the line is
    redrawn, in a log a line is written every 10 s.  A ``progress`` block inside another
    shows nothing of its own.

    Examples
    --------
    >>> import dask.array as da
    >>> with progress(enabled=False):
    ...     int(da.ones(10, chunks=3).sum().compute())
    10
    """
    if not enabled or _SHOWING.get():
        yield
        return
    token = _SHOWING.set(True)
    try:
        if label:
            print(label, file=sys.stderr, flush=True)
        client = active_client()
        if client is None:
            from dask.diagnostics import ProgressBar

            with ProgressBar(minimum=1.0, dt=interval, out=sys.stderr):
                yield
        else:
            with _ClusterProgress(client, label=label, interval=interval):
                yield
    finally:
        _SHOWING.reset(token)


def _task_counts(dask_scheduler: Any = None) -> dict[str, float]:
    """Cumulative task counts of a scheduler (runs on the scheduler)."""
    counts = {"given": 0, "done": 0, "erred": 0, "processing": 0}
    for prefix in dask_scheduler.task_prefixes.values():
        counts["given"] += prefix.state_counts.get("waiting", 0)
        counts["done"] += prefix.state_counts.get("memory", 0)
        counts["erred"] += prefix.state_counts.get("erred", 0)
        counts["processing"] += prefix.states.get("processing", 0)
    workers = dask_scheduler.workers.values()
    counts["workers"] = len(workers)
    counts["memory"] = float(sum(ws.memory.process for ws in workers))
    return counts


class _ClusterProgress:
    """A background thread polling the scheduler's task counts and printing one line."""

    def __init__(self, client: Any, *, label: str, interval: float, out: Any = None) -> None:
        self.client = client
        self.label = label.strip() or "[daskred]"
        self.interval = max(float(interval), 0.1)
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daskred-progress", daemon=True)
        self._start: dict[str, float] | None = None
        self._last_line = ""

    def __enter__(self) -> _ClusterProgress:
        self._start = self._poll()
        if self._start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._start is not None:
            self._show(final=True)

    def _poll(self) -> dict[str, float] | None:
        try:
            return self.client.run_on_scheduler(_task_counts)
        except Exception:  # noqa: BLE001 - progress must never fail a run (scheduler gone, pickling disabled)
            return None

    def _line(self, counts: Mapping[str, float]) -> str:
        assert self._start is not None
        given = int(counts["given"] - self._start["given"])
        done = int(counts["done"] - self._start["done"])
        erred = int(counts["erred"] - self._start["erred"])
        line = (f"{self.label}: {done}/{given} tasks, {int(counts['processing'])} running, "
                f"{int(counts['workers'])} workers, {counts['memory'] / 2**30:.2f} GiB")
        return line + (f", {erred} erred" if erred else "")

    def _show(self, *, final: bool = False) -> None:
        counts = self._poll()
        if counts is None:
            return
        line = self._line(counts)
        if counts["given"] == self._start["given"] and counts["done"] == self._start["done"]:
            return  # no task yet (or a block that computes nothing): nothing to show
        if self.tty:
            end = "\n" if final else ""
            print(f"\r{line:<{len(self._last_line)}}", end=end, file=self.out, flush=True)
        elif final or line != self._last_line:
            print(line, file=self.out, flush=True)
        self._last_line = line

    def _run(self) -> None:
        period = self.interval if self.tty else max(self.interval, 10.0)
        while not self._stop.wait(period):
            self._show()


# --------------------------------------------------------------------------- memory
def _process_memory_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _monitor_mark(dask_worker: Any = None) -> int:
    """Index of the worker's next memory sample (runs on a worker)."""
    return int(dask_worker.monitor.count)


def _monitor_peak(marks: Mapping[str, int], dask_worker: Any = None) -> float:
    """Largest memory sample of the worker since its mark, and now, in MiB (runs on a worker)."""
    monitor = dask_worker.monitor
    samples = monitor.range_query(marks.get(dask_worker.address, 0)).get("memory", [])
    values = [s for s in samples if s is not None]
    return max([v / 2**20 for v in values] + [_process_memory_mb()])


def worker_memory(client: Any = None) -> dict[str, float]:
    """Return the memory (resident set, MiB) of each process that runs tasks, now.

    Parameters
    ----------
    client : distributed.Client, optional
        The client whose workers to ask; by default the current client.  Without one,
        this process (which runs the threaded scheduler's tasks), under the key ``"local"``.

    Returns
    -------
    dict of str to float
        Worker address (or ``"local"``) to resident memory in MiB.

    Examples
    --------
    >>> list(worker_memory())
    ['local']
    """
    client = client if client is not None else active_client()
    if client is None:
        return {"local": _process_memory_mb()}
    return dict(client.run(_process_memory_mb, on_error="ignore"))


@dataclass
class MemoryPeak:
    """Peak memory of the processes that ran tasks during a :func:`track_memory` block.

    Attributes
    ----------
    per_process : dict of str to float
        Worker address (or ``"local"``) to its peak resident memory in MiB.
    """

    per_process: dict[str, float] = field(default_factory=dict)

    @property
    def peak_mb(self) -> float:
        """The largest peak of one process, MiB (0 when nothing was measured)."""
        return round(max(self.per_process.values(), default=0.0), 1)

    @property
    def total_mb(self) -> float:
        """The sum of the processes' peaks, MiB: an upper bound of the cluster's use at once."""
        return round(sum(self.per_process.values()), 1)


@contextlib.contextmanager
def track_memory(*, interval: float = 0.2) -> Iterator[MemoryPeak]:
    """Measure the peak memory of every process that runs tasks during the block.

    Parameters
    ----------
    interval : float
        Sampling period in seconds for the local process.  Distributed workers are
        sampled by their own system monitor (every 0.5 s by default, dask's
        ``distributed.admin.system-monitor.interval``).

    Yields
    ------
    MemoryPeak
        Filled in when the block ends.

    Notes
    -----
    Sampled, so a spike shorter than the sampling period can be missed.  Workers that join
    during the block report their peak since they started; workers lost during the block
    are not reported.  Measuring never fails the block: a worker that cannot be asked is
    left out.

    Examples
    --------
    >>> with track_memory() as memory:
    ...     data = bytearray(50 * 2**20)
    >>> memory.peak_mb > 50
    True
    """
    result = MemoryPeak()
    client = active_client()
    if client is None:
        peak = [_process_memory_mb()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(interval):
                peak[0] = max(peak[0], _process_memory_mb())

        thread = threading.Thread(target=sample, name="daskred-memory", daemon=True)
        thread.start()
        try:
            yield result
        finally:
            stop.set()
            thread.join(timeout=5)
            result.per_process["local"] = round(max(peak[0], _process_memory_mb()), 1)
        return
    try:
        marks = client.run(_monitor_mark, on_error="ignore")
    except Exception:  # noqa: BLE001 - measuring must never fail a run
        marks = {}
    try:
        yield result
    finally:
        try:
            peaks = client.run(_monitor_peak, marks, on_error="ignore")
        except Exception:  # noqa: BLE001 - measuring must never fail a run
            peaks = {}
        result.per_process.update({str(k): round(float(v), 1) for k, v in peaks.items()
                                   if isinstance(v, (int, float))})
