"""Grids and searches on Ray: a local Ray with 2 CPUs trains quick.yaml to the same results as the plain path,
and a search's two tasks share one study."""
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, all_runs, sqlite_uri
from training import contract as C
from training.grid import main as grid_main
from training.location import tracking_uri

QUICK = "training/grids/quick.yaml"


def children_by_hash() -> dict[str, list[float]]:
    """config hash -> per-epoch test_acc, for every grid child in the current store."""
    c = MlflowClient(tracking_uri())
    out = {}
    for r in all_runs():
        if r.data.tags.get(C.TAG_PARENT_RUN_ID):
            assert r.info.status == C.STATUS_FINISHED
            hist = sorted(c.get_metric_history(r.info.run_id, C.TEST_ACC), key=lambda m: m.step)
            assert [m.step for m in hist] == list(range(len(hist)))
            out[r.data.tags[C.TAG_CONFIG_HASH]] = [m.value for m in hist]
    return out


@pytest.fixture(scope="module")
def local_ray():
    try:
        import ray
    except ImportError:
        pytest.fail("Ray is not installed: run `make install-ray`")
    import logging
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_quick_grid_on_a_local_ray_matches_the_plain_grid(local_ray, tmp_path, monkeypatch):
    (tmp_path / "plain").mkdir()
    (tmp_path / "ray").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "plain"))
    assert grid_main([QUICK]) == 0
    plain = children_by_hash()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "ray"))
    assert grid_main([QUICK, "--ray"]) == 0
    on_ray = children_by_hash()

    assert len(plain) == 4 and on_ray.keys() == plain.keys()
    for h in plain:
        assert len(on_ray[h]) == len(plain[h]) == 3
        assert np.abs(np.array(on_ray[h]) - np.array(plain[h])).max() <= 0.001, (h, plain[h], on_ray[h])
    # The cohorts really ran as Ray tasks (3 cohorts: the two sigmoid configs stack together).
    tasks = [e for e in local_ray.timeline() if e.get("cat") == "task::_train_task"]
    assert len(tasks) == 3, tasks


def test_without_ray_installed_ray_fails_in_one_line_before_any_run(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # what an install without Ray looks like to `import ray`
            "from training.errors import exit_on_user_error\nfrom training.grid import main\n"
            f"exit_on_user_error(lambda: main(['{QUICK}', '--ray']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": sqlite_uri(tmp_path)})
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: --ray needs Ray, which is not installed: pip install -r requirements-ray.txt (or make install-ray)"]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_search_on_a_local_ray_is_two_tasks_sharing_one_study_and_trains_exactly_its_trials(
        local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path))
    path = tmp_path / "ray-search.yaml"
    path.write_text("experiment: ray-search\n"
                    "base: {activation: sigmoid, loss: mse, train_size: 1000, val_size: 500, epochs: 3}\n"
                    "search: {trials: 8, pruner: median, space: {lr: {log_uniform: [0.1, 10]}, "
                    "batch_size: {choice: [10, 20]}}}\n")
    assert grid_main([str(path), "--ray"]) == 0
    children = [r for r in all_runs(experiment="ray-search") if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    assert len(children) == 8 and all(r.data.tags[C.TAG_SEARCH_STATE] in C.SEARCH_STATES for r in children)
    assert len({r.data.tags[C.TAG_SEARCH_TRIAL] for r in children}) == 8  # none duplicated
    tasks = [e for e in local_ray.timeline() if e.get("cat") == "task::_search_task"]
    assert len(tasks) == 2, tasks  # one claimant per CPU
