"""The health checks see a dead digit: a digit the network (almost) never predicts, and a run stuck far below
its replicates.

The thresholds on hand-built confusion matrices and curves, then the real thing: Nielsen's [784,30,10]
sigmoid net at the default runs' settings (training/grids/seeds.yaml), seeds 0, 1 and 2, for 3 epochs
instead of 30 (seed 1 is stuck from its first epoch: it never predicts a 0).  Seed 1's run page must warn
that 0 is never predicted and link to the digit map; seeds 0 and 2 must not.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dashboard.analytics import health as H
from training import contract as C
from tests.conftest import served, sqlite_uri

NIELSEN = """experiment: nielsen-health
runs:
  - &nielsen {run_name: "Nielsen seed 0", sizes: [784, 30, 10], activation: sigmoid, loss: mse,
              init: nielsen, val_size: 10000, lr: 3.0, batch_size: 10, epochs: 3, seed: 0}
  - {<<: *nielsen, run_name: "Nielsen seed 1", seed: 1}
  - {<<: *nielsen, run_name: "Nielsen seed 2", seed: 2}
"""


def from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, labels) arrays whose confusion matrix (rows true, columns predicted) is cm."""
    labels = np.repeat(np.arange(10), cm.sum(axis=1))
    pred = np.concatenate([np.repeat(np.arange(10), row) for row in cm])
    return pred, labels


def confusion(diagonal: int = 100) -> np.ndarray:
    return np.diag(np.full(10, diagonal))


def test_the_predicted_share_is_a_column_sum_over_a_row_sum():
    cm = confusion()
    cm[3, 5] = 50  # 50 threes called fives: column 5 holds 150, row 3 holds 150
    pred, labels = from_confusion(cm)
    share = H.predicted_share(pred, labels)
    assert share[5] == pytest.approx(150 / 100) and share[3] == pytest.approx(100 / 150)
    assert H.rare_digit_warnings(pred, labels) == []


def test_a_digit_never_predicted_is_an_error_naming_it_and_its_counts():
    cm = confusion()
    cm[0, 0], cm[0, 6] = 0, 100  # every 0 called a 6: column 0 is empty
    pred, labels = from_confusion(cm)
    (w,) = H.rare_digit_warnings(pred, labels)
    assert (w.check, w.title, w.digit, w.severity) == (H.DIGITS, "0 is never predicted", 0, "error")
    assert "predicts 0 for 0 of the 1,000 test images" in w.explanation and "100 of them show a 0" in w.explanation
    assert "10%" in w.explanation


def test_the_threshold_is_ten_percent_of_the_digits_true_count():
    cm = confusion(1000)
    cm[7, 7], cm[7, 1] = 99, 901  # 7 predicted 99 times for 1000 sevens: 9.9 %
    (w,) = H.rare_digit_warnings(*from_confusion(cm))
    assert (w.title, w.digit, w.severity) == ("7 is almost never predicted", 7, "warning")
    cm[7, 7], cm[7, 1] = 100, 900  # exactly 10 %: not under it
    assert H.rare_digit_warnings(*from_confusion(cm)) == []


def test_a_digit_with_no_test_images_is_not_flagged():
    cm = confusion()
    cm[9, 9] = 0
    assert H.rare_digit_warnings(*from_confusion(cm)) == []


def test_a_run_stuck_far_below_its_replicates_is_flagged_with_its_weakest_digit():
    stuck = [0.10, 0.83, 0.84, 0.842, 0.842, 0.843, 0.843]
    (w,) = H.replicate_warnings(stuck, [0.94, 0.939], weakest_digit=0)
    assert (w.check, w.digit) == (H.REPLICATES, 0)
    assert "84.30%" in w.explanation and "93.90%–94.00%" in w.explanation and "2 replicates" in w.explanation


def test_replicates_need_a_five_point_gap_and_a_plateau():
    assert H.replicate_warnings([0.1, 0.90, 0.905], [0.94]) == []  # 3.5 points below: seed noise, no warning
    assert H.replicate_warnings([0.1, 0.50, 0.60, 0.70], [0.94]) == []  # far below but still climbing 10 points
    assert H.replicate_warnings([0.1, 0.80, 0.80, 0.80], []) == []  # no replicates, nothing to compare with
    assert len(H.replicate_warnings([0.1, 0.80, 0.80, 0.80], [0.94])) == 1
    assert H.plateau_gain([0.1, 0.5, 0.6, 0.7, 0.71, 0.72, 0.73]) == pytest.approx(0.02)  # last 2 of 6 epochs


# ---- on real runs -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nielsen(tmp_path_factory):
    """Nielsen's three seeds, trained for real by python -m training.grid: (tracking URI, {seed: run id})."""
    import subprocess

    from tests.conftest import all_runs
    root = tmp_path_factory.mktemp("nielsen-health")
    grid = root / "nielsen.yaml"
    grid.write_text(NIELSEN)
    uri = sqlite_uri(root)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "training.grid", str(grid)], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=300)
    runs = {int(r.data.params[C.PARAM_SEED]): r.info.run_id for r in all_runs(uri, "nielsen-health")
            if C.PARAM_SEED in r.data.params}  # the grid's parent run has none
    assert sorted(runs) == [0, 1, 2]
    return uri, runs


@pytest.fixture
def run_page(nielsen, monkeypatch):
    """The run page's module, as Dash loads it, over the Nielsen store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nielsen[0])
    import dash

    import dashboard.app  # noqa: F401  (registers the pages)
    from dashboard.read import cache
    cache.clear()
    module = next(p["module"] for p in dash.page_registry.values() if p["path_template"] == "/runs/<run_id>")
    return sys.modules[module]


def test_seed_1_is_really_stuck_and_seeds_0_and_2_are_not(nielsen, run_page):
    from dashboard.read import store
    for seed, rid in nielsen[1].items():
        pred = store.load_snapshot(rid, store.snapshot_epochs(rid)[-1])[C.PRED_CLASS]
        zeros = int((pred == 0).sum())
        assert (zeros == 0) if seed == 1 else (zeros > 900), (seed, zeros)  # 980 zeros in the test set


def test_the_stuck_seed_warns_that_0_is_never_predicted_and_the_healthy_seeds_do_not(nielsen, run_page):
    from dashboard.loaders import run_data
    warned = {}
    for seed, rid in nielsen[1].items():
        warned[seed] = run_page.digit_warnings(rid, run_data.overview(rid))
    assert warned[0] == [] and warned[2] == []
    titles = {w.title: w for w in warned[1]}
    assert titles["0 is never predicted"].digit == 0
    assert titles["Stuck far below its replicates"].digit == 0  # its weakest digit: 0, recall 0 %
    assert "2 replicates" in titles["Stuck far below its replicates"].explanation


@pytest.mark.browser
def test_the_stuck_seeds_run_page_links_its_warning_to_the_digit_map(nielsen, page, tmp_path):
    from tests.conftest import assert_no_dash_errors
    uri, ids = nielsen
    with served(["-m", "dashboard", "--port", "{port}"], tmp_path / "server.log",
                env={"MLFLOW_TRACKING_URI": uri}) as server:
        page.goto(f"{server.url}/runs/{ids[1]}")
        page.wait_for_selector(".run-health-item", timeout=60000)
        text = page.inner_text("#run-health")
        assert "0 is never predicted" in text and "No warning signs" not in text
        link = page.locator(".run-health-link").first
        assert link.get_attribute("href") == f"/runs/{ids[1]}/neurons/digits?digit=0"
        link.click()
        page.wait_for_selector("#digits-line", timeout=60000)
        assert page.inner_text("#digits-line").startswith("Digit 0:")
        page.goto(f"{server.url}/runs/{ids[0]}")
        page.wait_for_selector("#run-health-ok", timeout=60000)
        assert_no_dash_errors(page)
