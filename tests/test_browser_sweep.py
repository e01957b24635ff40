"""The sweep review in real headless Chromium over a real 3 learning rates x 3 seeds grid
(training/grids/lr_seeds.yaml, trained here): grouped curves, the toggle, reload, the two-run review,
and click-through from the heatmap and the parallel coordinates."""
import re
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from statsmodels.stats.contingency_tables import mcnemar

from tests.conftest import REPO, assert_no_dash_errors, served, sqlite_uri, wait_runs_review

pytestmark = pytest.mark.browser
TIMEOUT = 30000


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The grid trained into its own store, a dashboard over it, and its runs: {(lr, seed): run id}."""
    root = tmp_path_factory.mktemp("sweep-store")
    uri = sqlite_uri(root)
    env = {"MLFLOW_TRACKING_URI": uri}
    subprocess.run([sys.executable, "-m", "training.grid", "training/grids/lr_seeds.yaml"], cwd=REPO, check=True,
                   env={**__import__("os").environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=600)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lr-seeds").experiment_id
    runs = {(r.data.params["lr"], r.data.params["seed"]): r for r in client.search_runs([exp])
            if "lr" in r.data.params}
    with served(["-m", "dashboard", "--port", "{port}"], root / "server.log", env=env) as server:
        yield server.url, uri, exp, runs


def wait_figures(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}", timeout=TIMEOUT)
    page.wait_for_function("!document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=TIMEOUT)


def test_a_seeded_grid_opens_grouped_with_bands_mean_sd_and_n_and_the_toggle_and_reload_keep_the_view(page, sweep):
    url, _, _, runs = sweep
    page.goto(f"{url}/compare?runs=" + ",".join(r.info.run_id for r in runs.values()))
    wait_figures(page, 4)
    assert page.locator(".legend a").all_inner_texts() == ["lr=0.5", "lr=1.0", "lr=3.0"] or \
        sorted(page.locator(".legend a").all_inner_texts()) == ["lr=0.5", "lr=1.0", "lr=3.0"]
    assert page.locator("#compare-curve-test_acc .js-fill").count() == 3  # one band per config
    rows = page.locator("#compare-grouped-table tbody tr")
    assert rows.count() == 3
    for i in range(3):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[1] == "3" and all("±" in c for c in cells[2:])
    page.locator("#compare-band input[value=ci]").check()
    page.wait_for_url(re.compile(r"band=ci"), timeout=TIMEOUT)
    page.wait_for_selector("text=band 95 % CI of the mean", timeout=TIMEOUT)
    page.locator("#compare-group input[value=off]").check()
    page.wait_for_url(re.compile(r"group=off"), timeout=TIMEOUT)
    page.wait_for_function("document.querySelectorAll('.legend a').length === 9", timeout=TIMEOUT)
    page.reload()
    wait_figures(page, 4)
    assert page.locator(".legend a").count() == 9 and page.locator("#compare-grouped-table").count() == 0
    page.go_back()
    page.wait_for_selector("#compare-grouped-table", timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_two_runs_show_fixed_and_broken_counts_and_mcnemar_recomputed_from_their_logged_predictions(page, sweep,
                                                                                                   monkeypatch):
    url, uri, _, runs = sweep
    a, b = runs[("1.0", "0")].info.run_id, runs[("3.0", "0")].info.run_id
    page.goto(f"{url}/compare?runs={a},{b}&epoch=2")
    page.wait_for_selector("#compare-fixed-count", timeout=TIMEOUT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from dashboard.read import store
    labels = store.test_set()[1]
    pa, pb = (store.load_snapshot(r, 2)[store.C.PRED_CLASS] for r in (a, b))
    fixed, broken = int(np.sum((pa != labels) & (pb == labels))), int(np.sum((pa == labels) & (pb != labels)))
    assert page.inner_text("#compare-fixed-count") == str(fixed)
    assert page.inner_text("#compare-broken-count") == str(broken)
    table = [[int(np.sum((pa == labels) & (pb == labels))), broken], [fixed, int(np.sum((pa != labels) & (pb != labels)))]]
    assert page.inner_text("#compare-mcnemar-p") == f"exact McNemar p = {mcnemar(table, exact=True).pvalue:.4g}"
    assert page.locator("#compare-fixed .sweep-gallery-item").count() == min(fixed, 24)
    assert "replicates" in page.inner_text("#compare-review")  # one seed each: no config-level claim
    page.locator("#compare-epoch").click()
    page.locator(".Select-option, [role=option]", has_text=re.compile(r"^3$")).first.click()
    page.wait_for_url(re.compile(r"epoch=3"), timeout=TIMEOUT)
    page.wait_for_selector("text=Confusion matrix B − A at epoch 3", timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_a_heatmap_cell_opens_its_run(page, sweep):
    url, _, exp, runs = sweep
    page.goto(f"{url}/?experiment={exp}")
    wait_runs_review(page)
    page.locator("#runs-heatmap").scroll_into_view_if_needed()  # a click outside the viewport reaches nothing
    box = page.locator("#runs-heatmap .nsewdrag").bounding_box()
    # Axes: x = lr (0.5, 1.0, 3.0), y = seed (0, 1, 2) from the bottom; the middle of the cell lr=3.0, seed=0.
    page.mouse.click(box["x"] + box["width"] * 5 / 6, box["y"] + box["height"] * 5 / 6)
    run_id = runs[("3.0", "0")].info.run_id
    page.wait_for_url(re.compile(f"/runs/{run_id}$"), timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_brushing_the_parallel_coordinates_to_one_line_links_to_that_run(page, sweep):
    url, _, exp, runs = sweep
    page.goto(f"{url}/?experiment={exp}")
    wait_runs_review(page)
    page.locator("#runs-parallel").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    axes = page.locator("#runs-parallel .axis-brush .background")
    box = axes.nth(axes.count() - 1).bounding_box()  # the last axis: final test accuracy
    best = max(runs.values(), key=lambda r: r.data.metrics["test_acc"])
    second = sorted(r.data.metrics["test_acc"] for r in runs.values())[-2]
    lo, hi = min(r.data.metrics["test_acc"] for r in runs.values()), best.data.metrics["test_acc"]
    frac = (hi - (best.data.metrics["test_acc"] + second) / 2) / (hi - lo)  # between the best two lines
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * frac)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * frac / 2, steps=3)
    page.mouse.move(x, box["y"] - 20, steps=5)
    page.mouse.up()
    page.wait_for_selector(".sweep-pick", timeout=TIMEOUT)
    assert page.locator(".sweep-pick").count() == 1
    page.locator(".sweep-pick").click()
    page.wait_for_url(re.compile(f"/runs/{best.info.run_id}$"), timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_the_compare_page_links_to_neurons_across_its_runs_which_shows_one_row_of_tiles_per_run(page, sweep):
    url, _, _, runs = sweep
    ids = [runs[("3.0", s)].info.run_id for s in ("0", "1", "2")]
    page.goto(f"{url}/compare?runs=" + ",".join(ids))
    wait_figures(page, 4)
    page.locator("#compare-neurons-link").click()
    page.wait_for_url(re.compile(r"/compare/neurons\?runs="), timeout=TIMEOUT)
    page.wait_for_function("document.querySelectorAll('.xneurons-row').length === 3", timeout=TIMEOUT)
    assert page.locator(".xneurons-tile").count() == 60  # 3 runs x 20 units of fc1
    assert page.locator(".xneurons-row").nth(1).locator("text=/r=/").count() == 20
    assert_no_dash_errors(page)
