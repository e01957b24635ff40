"""A view read by one process and loaded by another (dashboard.read.view_share), as two gunicorn workers do:
on a real MLflow store, with a real second process."""
import os
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dashboard.read import cache, run_index, store, view_share
from dashboard.views import runs_view as V
from tests.conftest import log_contract_run
from training.location import tracking_uri

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_SEARCH = store.search_page


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """Six runs in experiment 'share', and a disk cache of this test's own."""
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "cache"))
    cache.clear()
    for i in range(6):
        log_contract_run(f"r{i}", {"test_acc": [0.1, 0.5 + i / 20]}, {"lr": 0.1 * (i + 1), "batch_size": 10},
                         experiment="share")
    # The store log_contract_run wrote to (MLFLOW_TRACKING_URI), whatever mlflow.set_tracking_uri an earlier
    # test in this session left behind: the dashboard and the other process read that one too.
    return MlflowClient(tracking_uri()).get_experiment_by_name("share").experiment_id


def other_worker(code: str) -> subprocess.Popen:
    """Another process on the same store and disk cache: the second gunicorn worker."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env={**os.environ},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def count_searches(monkeypatch) -> list:
    """Each call of store.search_page this process makes, counted (the call itself still goes to MLflow)."""
    calls = []

    def counted(*args, **kw):
        calls.append(args)
        return REAL_SEARCH(*args, **kw)
    monkeypatch.setattr(store, "search_page", counted)
    return calls


def test_a_view_another_worker_read_is_loaded_not_read_again_and_equals_a_read(sweep, monkeypatch):
    worker = other_worker(f"""
        from dashboard.views import runs_view as V
        v = V.view({sweep!r}, "", wait=True)
        print(v.digest)
    """)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    theirs = out.strip().splitlines()[-1]

    calls = count_searches(monkeypatch)
    v = V.view(sweep, "", wait=True)
    assert v.ready and len(v.frame) == 6
    assert calls == []  # loaded: MLflow was not searched by this process
    assert v.digest == theirs  # the same content, by the same name, in both workers

    # What was loaded is what a read of this process's own builds.
    mine = V.frame_of(list(REAL_SEARCH([sweep], "", 100)))
    pd.testing.assert_frame_equal(v.frame.sort_values("run_id").reset_index(drop=True),
                                  mine.sort_values("run_id").reset_index(drop=True))
    assert run_index._digest(mine) == v.digest


def test_a_worker_that_finds_the_view_being_read_waits_and_loads_that_read(sweep, monkeypatch):
    key = ((sweep,), "")
    # The other worker takes the view's lock, holds it 3 s (a long read), then shares its frame.
    worker = other_worker(f"""
        import time
        from dashboard.read import view_share
        from dashboard.views import runs_view as V
        from dashboard.read import store
        with view_share.reading({key!r}) as first:
            print("locked", first, flush=True)
            began = time.time()
            time.sleep(3)
            frame = V.frame_of(list(store.search_page([{sweep!r}], "", 100)))
            view_share.save({key!r}, frame, began, time.time() - began)
    """)
    assert worker.stdout.readline().strip() == "locked True"
    calls = count_searches(monkeypatch)
    started = time.monotonic()
    v = V.view(sweep, "", wait=True)
    waited = time.monotonic() - started
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert v.ready and len(v.frame) == 6 and calls == []  # it waited for that read and took it
    assert waited > 1.5


def test_a_process_reads_for_itself_its_own_frames_torn_files_and_stale_ones(sweep, monkeypatch):
    calls = count_searches(monkeypatch)
    v = V.view(sweep, "", wait=True)  # read here, and shared
    assert len(calls) == 1
    cache.clear()
    V.view(sweep, "", wait=True)
    assert len(calls) == 2  # its own frame is not loaded back: this process reads again, as it always did

    key = ((sweep,), "")
    assert view_share.load(key, 0.0) is None  # written by this pid
    base = view_share._base(key)
    with open(base + ".parquet", "wb") as f:
        f.write(b"PAR1 not a parquet file")
    meta = {"key": repr(key), "pid": -1, "began": time.time(), "seconds": 1.0, "rows": 6}
    with open(base + ".json", "w") as f:
        f.write(pd.Series(meta).to_json())
    assert view_share.load(key, 0.0) is None  # torn: a miss, not an error
    assert v.ready


def test_a_shared_read_is_brought_up_to_date_by_the_loading_worker(sweep, monkeypatch):
    worker = other_worker(f"""
        from dashboard.views import runs_view as V
        V.view({sweep!r}, "", wait=True)
    """)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    new = log_contract_run("late", {"test_acc": [0.1, 0.9]}, {"lr": 9.0, "batch_size": 10}, experiment="share")
    monkeypatch.setattr(run_index, "UPDATE_MIN_S", 0.0)
    v = V.view(sweep, "", wait=True)
    assert len(v.frame) == 6  # the other worker's read, from before the new run
    v = V.view(sweep, "", refresh=True)
    assert len(v.frame) == 7 and new in set(v.frame["run_id"])


def test_a_frame_older_than_its_reread_time_is_not_loaded(sweep):
    """A frame another dashboard left in the cache long ago (yesterday's server) is no read of today's store."""
    key = ((sweep,), "")
    frame = V.frame_of(list(REAL_SEARCH([sweep], "", 100)))
    view_share.save(key, frame, time.time() - 3600, 2.0)
    with open(view_share._base(key) + ".json") as f:
        meta = f.read()
    with open(view_share._base(key) + ".json", "w") as f:
        f.write(meta.replace(f'"pid": {os.getpid()}', '"pid": -1'))  # as if another process wrote it
    assert view_share.load(key, 0.0) is not None  # there, and whole
    assert view_share.load(key, 0.0, run_index._reread_after) is None  # an hour old: read again instead
    view_share.save(key, frame, time.time() - 5, 2.0)
    with open(view_share._base(key) + ".json") as f:
        meta = f.read()
    with open(view_share._base(key) + ".json", "w") as f:
        f.write(meta.replace(f'"pid": {os.getpid()}', '"pid": -1'))
    assert view_share.load(key, 0.0, run_index._reread_after) is not None  # five seconds old: loaded
