"""A view's full read, done by one gunicorn worker and shared with the others through the disk cache.

Why: MLflow's `search_runs` takes about 1.5 ms a run here (its ORM builds every row), so reading a view of
10,000 runs takes 15 s of one core, and one of 100,000 over two minutes.  Each worker keeps its own view
(dashboard.read.run_index), and without this each read it again, at the same moment, on the same cores, while
the page waited on them.  Now the first worker to start a view's read takes a file lock and writes the frame
when done (Parquet: plain data, never pickle); a worker that finds the lock taken waits and loads that frame.

A shared frame is the same as a read of the worker's own: the read began at the time it carries, and the
worker brings it up to date from there with its own incremental updates.  A process never loads a frame it
wrote itself (it had it in memory), so one process, tests included, reads as it always did.
"""
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import pandas as pd

from dashboard.read import cache

FOLDER = "views"
KEEP_S = 24 * 3600  # frames of views nobody opened for a day are removed as new ones are written


def _base(key: tuple) -> str:
    folder = os.path.join(cache.directory(), FOLDER)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, hashlib.sha256(repr(key).encode()).hexdigest()[:24])


def load(key: tuple, newer_than: float, fresh_for: Callable[[float], float] = lambda seconds: float("inf")
         ) -> tuple[pd.DataFrame, float, float] | None:
    """(frame, began, seconds it took) of another process's read of the view that began after `newer_than`
    (wall clock) and is still fresh (younger than `fresh_for(seconds it took)`: a frame a dashboard that ran
    yesterday left here is no read of today's store), or None.  A torn or foreign file is a miss."""
    try:
        base = _base(key)
        with open(base + ".json") as f:
            meta = json.load(f)
        if meta["pid"] == os.getpid() or meta["began"] <= newer_than or meta["key"] != repr(key) \
                or time.time() - meta["began"] > fresh_for(float(meta["seconds"])):
            return None
        frame = pd.read_parquet(base + ".parquet")
        if len(frame) != meta["rows"]:
            return None
        return _as_built(frame), float(meta["began"]), float(meta["seconds"])
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None
    except Exception:  # noqa: BLE001 (pyarrow's own errors: a file another version wrote is a miss too)
        return None


def save(key: tuple, frame: pd.DataFrame, began: float, seconds: float) -> None:
    """Write the frame, then its description (what `load` checks), each whole or not at all."""
    try:
        base = _base(key)
        tmp = f"{base}.{os.getpid()}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, base + ".parquet")
        meta = {"key": repr(key), "pid": os.getpid(), "began": began, "seconds": seconds, "rows": len(frame)}
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, base + ".json")
        _forget_old(os.path.dirname(base))
    except Exception:  # noqa: BLE001 (a frame pyarrow cannot write, a full disk: the others read for themselves)
        try:
            os.remove(tmp)
        except (OSError, UnboundLocalError):
            pass


@contextmanager
def reading(key: tuple):
    """Held while this process reads the view: yields True when it got the lock first, False when another
    process held it (this one then waited for that read to end)."""
    try:
        fd = os.open(_base(key) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield True  # no shared folder: read alone
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            first = True
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the other worker's read: wait for its end (a killed one lets go)
            first = False
        yield first
    finally:
        os.close(fd)  # and with it the lock


def read_once(key: tuple, newer_than: float, read: Callable[[], tuple[pd.DataFrame, float, float]],
              fresh_for: Callable[[float], float] = lambda seconds: float("inf")):
    """(frame, began, seconds) for a full read of the view: another process's, when one began after
    `newer_than` (wall clock) and is fresh (see `load`) or ends while this one waits, else `read()`'s, which
    is then shared."""
    shared = load(key, newer_than, fresh_for)
    if shared is not None:
        return shared
    with reading(key) as first:
        if not first:
            shared = load(key, newer_than, fresh_for)
            if shared is not None:
                return shared
        frame, began, seconds = read()
        save(key, frame, began, seconds)
        return frame, began, seconds


def _as_built(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet gives a tuple column back as arrays: tuples again, so a loaded frame equals the built one."""
    for col in frame.columns[frame.dtypes == object]:
        values = frame[col]
        if values.map(lambda x: isinstance(x, np.ndarray)).any():
            frame[col] = values.map(lambda x: tuple(x.tolist()) if isinstance(x, np.ndarray) else x)
    return frame


def _forget_old(folder: str) -> None:
    now = time.time()
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        try:
            if now - os.path.getmtime(path) > KEEP_S:
                os.remove(path)
        except OSError:
            pass
