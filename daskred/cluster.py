"""Where graphs run, and how their progress is shown.

Nothing in the stages knows which scheduler runs them: library functions build graphs,
and the few places that compute (writers, photometry/astrometry fits, the pipeline) do so
inside :func:`progress`, which shows a bar for the local scheduler or for a
``dask.distributed`` client alike.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["progress", "active_client", "use_cluster"]


def active_client():
    """The current ``distributed.Client``, or None when graphs run on the local scheduler."""
    try:
        from distributed import get_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return get_client()
    except ValueError:
        return None


@contextlib.contextmanager
def progress(label: str = "", *, enabled: bool = True) -> Iterator[None]:
    """Show progress of the graphs computed inside the block (on stderr).

    With a local scheduler a :class:`dask.diagnostics.ProgressBar` is used; with a
    distributed client, progress of its tasks is reported by the client's own diagnostics
    (see :func:`distributed.progress` and the dashboard), so nothing is added here.
    """
    if not enabled or active_client() is not None:
        yield
        return
    from dask.diagnostics import ProgressBar

    if label:
        print(label, file=sys.stderr, flush=True)
    with ProgressBar(minimum=1.0, dt=0.5, out=sys.stderr):
        yield


@contextlib.contextmanager
def use_cluster(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    scheduler: str | None = None,
) -> Iterator[str]:
    """Run the graphs computed inside the block on the chosen engine; yields its description.

    * ``scheduler`` (or the ``DASK_SCHEDULER_ADDRESS`` environment variable): connect a
      ``distributed.Client`` to that running scheduler (TLS per the dask security config);
    * ``workers``: start a ``distributed.LocalCluster`` with that many worker processes;
    * neither: dask's threaded scheduler in this process (one thread per core).
    """
    import os

    import dask

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address or workers:
        from distributed import Client, LocalCluster

        if address:
            client = Client(address)
            cluster = None
        else:
            cluster = LocalCluster(n_workers=int(workers), threads_per_worker=threads_per_worker or 1,
                                   memory_limit=memory_limit or "auto", processes=True,
                                   dashboard_address=":0")
            client = Client(cluster)
        print(f"[daskred] dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
        try:
            with client.as_current():
                yield f"distributed ({address or f'{workers} local workers'})"
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return
    with dask.config.set(scheduler="threads"):
        yield "threads"
