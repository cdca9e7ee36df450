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

__all__ = ["progress", "active_client"]


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
