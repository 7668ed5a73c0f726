"""Rendered-data caches: the cache folder, a process pool with progress, and cached ``.npz`` files.

Shared by the ToyWorld data sets (:mod:`studio.priors.toydata`, :mod:`studio.lift.data`), which
render a pure function of a config once and keep it as one compressed ``.npz`` named by the config.

* :func:`cache_root` / :func:`default_cache_dir`: ``~/.cache/distill-studio`` (``$DISTILL_STUDIO_CACHE``
  overrides it) and a named folder below it.
* :func:`map_jobs`: ``fn`` over a list of jobs, in order, serially or in ``spawn`` worker processes,
  calling ``progress(done, total)`` after each job.
* :func:`save_npz` / :func:`load_npz`: arrays to/from a compressed ``.npz`` (written atomically,
  read without pickles).
* :func:`load_or_make`: load the cached file at a path, or make, save and return the data.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar

from studio.io.atomic import atomic_path

T = TypeVar("T")
R = TypeVar("R")

CACHE_ENV = "DISTILL_STUDIO_CACHE"
"""Environment variable that replaces the cache root ``~/.cache/distill-studio``."""


def cache_root() -> Path:
    """``$DISTILL_STUDIO_CACHE`` if set (and non-empty), else ``~/.cache/distill-studio``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "distill-studio"


def default_cache_dir(name: str) -> Path:
    """The cache folder ``name`` below :func:`cache_root` (read at call time; not created here)."""
    return cache_root() / name


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def map_jobs(
    fn: Callable[[T], R],
    jobs: Sequence[T],
    workers: int = 2,
    progress: Optional[Callable[[int, int], None]] = None,
    chunksize: int = 4,
) -> list[R]:
    """``[fn(job) for job in jobs]``, in order; ``progress(done, total)`` after each job.

    With ``workers <= 1`` or fewer than 4 jobs this runs in the calling process. Otherwise it uses a
    pool of ``workers`` *spawned* processes (torch + fork is fragile; spawn costs one import per
    worker) with ``OMP_NUM_THREADS=1`` set in each, handing out ``chunksize`` jobs at a time, so
    ``fn`` and the jobs must be picklable (``fn`` a module-level function).
    """
    jobs = list(jobs)
    results: list[R] = []
    if workers <= 1 or len(jobs) < 4:
        for n, job in enumerate(jobs):
            results.append(fn(job))
            if progress:
                progress(n + 1, len(jobs))
        return results
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        for n, r in enumerate(pool.imap(fn, jobs, chunksize=chunksize)):
            results.append(r)
            if progress:
                progress(n + 1, len(jobs))
    return results


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` (name -> numpy array, in this order) to the compressed ``.npz`` ``path``,
    atomically (parent folders are created). Returns ``path``."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def load_npz(path: str | os.PathLike, keys: Iterable[str]) -> dict[str, Any]:
    """The arrays ``keys`` of the ``.npz`` file ``path`` (fully read; object arrays refused)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in keys}


def load_or_make(
    path: str | os.PathLike,
    load: Callable[[Path], T],
    make: Callable[[], T],
    save: Callable[[T, Path], Any],
    *,
    what: str,
    plan: str,
    count: Callable[[T], int],
    unit: str = "views",
    log: Callable[[str], None] = print,
) -> T:
    """``load(path)`` if ``path`` is a file, else ``make()``, ``save(data, path)`` and the data.

    Logs ``"Loading {what} {path}"``, or ``"Rendering {what}: {plan} -> {path}"`` and afterwards
    ``"Rendered {count(data)} {unit} in {seconds}s"``.
    """
    path = Path(path)
    if path.is_file():
        log(f"Loading {what} {path}")
        return load(path)
    log(f"Rendering {what}: {plan} -> {path}")
    t0 = time.time()
    data = make()
    save(data, path)
    log(f"Rendered {count(data)} {unit} in {time.time() - t0:.0f}s")
    return data


def main_process_first(
    read: Callable[..., T], is_main: bool, wait: Callable[[], None], log: Callable[[str], None]
) -> T:
    """``read(log=log)`` in a multi-process run where ``read`` renders and caches its data on first use:
    the main process reads first (making the cache, logging), the others after ``wait()`` (a
    barrier every process calls) read the cache silently; each process reads once."""
    data = read(log=log) if is_main else None
    wait()
    return data if is_main else read(log=lambda _msg: None)
