"""The runs of one view (experiments and an MLflow filter), read in bulk once and then kept up to date.

Why: MLflow's `search_runs` costs about 0.8 ms a run, so a view of 10,000 runs takes seconds and one of
100,000 over a minute.  A page cannot read that per request.  So a view's runs are read once, page by
page, into one compact frame (`build` turns each page of Run objects into rows, and the Run objects are
dropped), in a background thread; the runs table's first rows come from a one-page search meanwhile
(dashboard.pages.runs).  After that the frame is brought up to date incrementally, with two small
searches through the same public API: runs that started since the newest one seen, and the runs that
were RUNNING.  What those cannot see (a run deleted, renamed, or an old run whose metrics now match the
filter) is caught by a full re-read in the background once the frame is older than REREAD_S (longer for a
view that takes long to read), while the old frame keeps serving.

One frame per view per process (gunicorn workers each keep their own), at most MAX_VIEWS views.  A read
in the background uses the tracking URI of the process (training.location), as every read here does.
"""
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from dashboard.read import cache, store, view_share
from training import contract as C

# Runs per search while building: their Run objects live only until the page is framed.  A view of 9,000
# runs read in one process peaked 546 MiB above where it began with pages of 10,000, 183 MiB with 2,000,
# in 12.4 s against 10.6 s (one read in a fresh process, its ru_maxrss before and after).
PAGE = 2_000
REREAD_S = 30.0  # as store.search_runs' cache: a deleted or renamed run shows within this
# ...but a large view's re-read holds this worker's GIL for seconds, and its pages wait on it: it comes at
# most once per REREAD_SHARE times its own duration (a 10 s read: every 200 s).
REREAD_SHARE = 20
MAX_VIEWS = 8
SYNC_BUILD_S = 1.0  # a view that was read this fast is re-read in the request, not in the background
UPDATE_MIN_S = 0.25  # the table asks for its blocks in a burst (ms apart): one incremental update serves it


@dataclass
class View:
    """One view's runs.  `frame` is None until its first read ends; `version` grows with every change, and
    `digest` names the frame's content (two workers that read the same runs agree on it)."""
    key: tuple
    frame: pd.DataFrame | None = None
    version: int = 0
    digest: str = ""
    read_at: float = 0.0  # monotonic time the last full read began
    read_wall: float = 0.0  # the same on the wall clock, which the workers share (dashboard.read.view_share)
    read_s: float = 0.0
    updated_at: float = 0.0  # monotonic time of the last incremental update
    progress: int = 0  # runs read so far by the read under way
    error: str | None = None
    reading: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    positions: dict = field(default_factory=dict, repr=False)  # run id -> row, of frame `positions_of`
    positions_of: object = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.frame is not None

    @property
    def running(self) -> bool:
        return self.frame is not None and not self.frame.empty and bool((self.frame["status"] == C.STATUS_RUNNING).any())


_views = cache.LRU(MAX_VIEWS)  # keyed by tracking URI too; cache.clear() empties it
_views_lock = threading.Lock()


def get(experiment_ids: list[str], filter_string: str, build: Callable[[list], pd.DataFrame],
        wait: bool = False, update: bool = False) -> View:
    """The view's entry, its first full read started in the background if none has begun.

    wait: block until that read has ended.  update: bring a read view up to date first, merging in new and
    running runs, with a full re-read (in this request when the last one was quick, else in the background)
    when the frame is older than REREAD_S."""
    key = (tuple(experiment_ids), filter_string or "")
    with _views_lock:
        v = _views.get(key) or _views.put(key, View(key))
    if v.error is not None and time.monotonic() - v.read_at > REREAD_S:
        v.error = None  # a store that was unreachable may be back; a bad filter is only refused again
    if not v.ready and v.error is None:
        if wait:
            _read(v, build)  # returns at once when a read is under way: then wait for it
            while v.reading:
                time.sleep(0.05)
        else:
            _start_read(v, build)
    if update and v.ready and time.monotonic() - v.updated_at >= UPDATE_MIN_S:
        if time.monotonic() - v.read_at > _reread_after(v.read_s) and not v.reading:
            if v.read_s <= SYNC_BUILD_S:
                _read(v, build)
                return v
            _start_read(v, build)
        _update(v, build)
    return v


def _reread_after(read_s: float) -> float:
    """Seconds after which a frame that took read_s to read is read again (and no longer shared)."""
    return max(REREAD_S, REREAD_SHARE * read_s)


def _start_read(v: View, build) -> None:
    with v.lock:
        if v.reading:
            return
        v.reading = True
    threading.Thread(target=_read, args=(v, build, True), daemon=True, name="run-index").start()


def _read(v: View, build, claimed: bool = False) -> None:
    """Every run of the view, page by page, into one frame; swapped in whole when done."""
    if not claimed:
        with v.lock:
            if v.reading:
                return
            v.reading = True
    began, began_wall = time.monotonic(), time.time()
    experiment_ids, filter_string = v.key

    def read_all():
        parts, token, v.progress = [], None, 0
        while True:
            page = store.search_page(list(experiment_ids), filter_string, PAGE, token=token)
            parts.append(build(list(page)))
            v.progress += len(page)
            token = page.token
            if not token:
                break
        frame = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(
            not p.empty for p in parts) else parts[0]
        return frame, began_wall, time.monotonic() - began

    try:
        # Another worker's read of the same view, when it has one newer than ours (or is reading it now).
        frame, read_wall, read_s = view_share.read_once(v.key, v.read_wall, read_all, _reread_after)
        digest = _digest(frame)
        with v.lock:
            v.frame, v.version, v.read_s, v.error, v.digest = frame, v.version + 1, read_s, None, digest
            v.read_wall, v.read_at = read_wall, time.monotonic() - (time.time() - read_wall)
    except store.StoreError as e:
        v.error, v.read_at = str(e), began
    except Exception as e:  # noqa: BLE001 (a store that went away mid-read: said on the page, tried again later)
        v.error, v.read_at = f"could not read the runs: {type(e).__name__}: {str(e)[:200]}", began
    finally:
        v.reading = False


def _update(v: View, build) -> None:
    """Merge in the runs that started since the newest seen and the ones that were running."""
    experiment_ids, filter_string = v.key
    frame, v.updated_at = v.frame, time.monotonic()
    clauses = []
    if not frame.empty and frame["start_time"].notna().any():
        newest_ms = int(frame["start_time"].max().value // 1_000_000)
        clauses.append(f"attributes.start_time >= {newest_ms}")
    running = frame.loc[frame["status"] == C.STATUS_RUNNING, "run_id"].tolist() if not frame.empty else []
    if running:
        clauses.append("attributes.run_id IN (" + ", ".join(f"'{r}'" for r in running) + ")")
    if frame.empty:
        clauses = [""]  # an empty view: look again for any run
    fresh = []
    try:
        for clause in clauses:
            both = " and ".join(s for s in (filter_string, clause) if s)
            fresh += list(store.search_page(list(experiment_ids), both, store.MAX_RUNS))
    except store.StoreError:
        return  # the next full read says what went wrong
    if not fresh:
        return
    new = build(list({r.info.run_id: r for r in fresh}.values()))
    if new.empty:
        return
    rows = _positions(v, frame)
    at = [rows.get(r) for r in new["run_id"]]
    if frame.empty or None in at or not _same(frame.iloc[at], new):
        merged = pd.concat([frame.drop(index=frame.index[[i for i in at if i is not None]]), new],
                           ignore_index=True) if not frame.empty else new
        digest = _digest(merged)
        with v.lock:
            if v.frame is frame:  # a full read that ended meanwhile wins
                v.frame, v.version, v.digest = merged, v.version + 1, digest


def _positions(v: View, frame: pd.DataFrame) -> dict:
    """run id -> row of the frame, kept for the frame it was made from: an update looks up a few runs in a
    frame of up to 100,000, and pandas' isin on its string column took 60 ms of a 110 ms update at 10,000."""
    if v.positions_of is not frame:
        v.positions, v.positions_of = {r: i for i, r in enumerate(frame["run_id"].tolist())} \
            if not frame.empty else {}, frame
    return v.positions


def _same(old: pd.DataFrame, new: pd.DataFrame) -> bool:
    """True when the re-read runs are as the frame has them (status and every metric), row for row."""
    cols = [c for c in new.columns if c == "status" or c.startswith("metrics.")]
    if any(c not in old.columns for c in cols):
        return False
    a, b = old[cols].reset_index(drop=True), new[cols].reset_index(drop=True)
    return bool(((a == b) | (a.isna() & b.isna())).all().all())


def _digest(frame: pd.DataFrame) -> str:
    """The frame's content as a short name: its runs and every value, whatever their order.  Each gunicorn
    worker keeps its own view, and a page must tell "another worker, the same runs" (nothing to redraw) from
    "runs changed"; a digest that differs for equal content only costs one redraw."""
    if frame.empty:
        return "0"
    try:
        rows = pd.util.hash_pandas_object(frame[sorted(frame.columns)], index=False)
        return f"{len(frame)}-{int(rows.to_numpy().sum(dtype='uint64')):016x}"
    except (TypeError, ValueError):  # a value pandas cannot hash: this process's own name for it
        return f"{len(frame)}-{id(frame):x}"
