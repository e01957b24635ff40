"""One SQLite store, several writers and a reader at once: nothing lost, nothing locked, nothing stale."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs
from training import contract as C

pytestmark = pytest.mark.slow

GRID = """
    experiment: {name}
    base: {{sizes: [784, 16, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 3, train_size: 3000}}
    grid: {{seed: [0, 1, 2], batch_size: [10, 30]}}
"""


def _start_grid(tmp_path, name, uri):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(GRID.format(name=name)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    # Output to files, not pipes: an unread pipe would stall one grid while the test waits on the other.
    with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "training.grid", str(path)], cwd=REPO, env=env,
                                stdout=out, stderr=err, text=True)


def test_two_grids_and_a_dashboard_reader_share_one_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db?timeout=60"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    MlflowClient(uri).search_experiments()  # one process creates the schema
    from dashboard.read import store

    grids = [_start_grid(tmp_path, name, uri) for name in ("left", "right")]
    errors, reads, seen_running = [], [0], [False]

    def reader():
        while any(g.poll() is None for g in grids):
            try:
                exps = [e["id"] for e in store.experiments()]
                runs = store.search_runs(exps) if exps else []
                for r in runs[:4]:
                    store.metric_history(r.info.run_id, C.TEST_ACC)
                seen_running[0] |= any(r.info.status == "RUNNING" for r in runs)
                reads[0] += 1
            except Exception as e:  # any failure to read while others write is a bug
                errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.2)

    t = threading.Thread(target=reader)
    t.start()
    for g in grids:
        g.wait(timeout=900)
    t.join()
    errs = [(tmp_path / f"{name}.err").read_text()[-2000:] for name in ("left", "right")]
    assert [g.returncode for g in grids] == [0, 0], errs
    assert errors == [] and reads[0] > 5 and seen_running[0]

    c = MlflowClient(uri)
    exps = [c.get_experiment_by_name(n).experiment_id for n in ("left", "right")]
    children = [r for n in ("left", "right") for r in all_runs(uri, n) if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(children) == 12 and all(r.info.status == "FINISHED" for r in children)
    for r in children:
        for key in C.EPOCH_METRICS + (C.grad_norm_key("fc1"), C.dead_fraction_key("fc1")):
            assert sorted(m.step for m in c.get_metric_history(r.info.run_id, key)) == [0, 1, 2, 3], key
    # What the dashboard reads at the end is complete: every run, every final metric.
    final = store.search_runs(exps)
    assert sum(1 for r in final if r.data.tags.get(C.TAG_PARENT_RUN_ID)) == 12
    assert all(C.TEST_ACC in r.data.metrics for r in final if r.data.tags.get(C.TAG_PARENT_RUN_ID))
