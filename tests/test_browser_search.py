"""The search review in real headless Chromium over a real search (tests/test_search_review.py's, trained
here with python -m training.grid): every figure draws, the best-so-far curve is the running maximum of the
complete trials' final val_acc recomputed from MLflow, a trial's point opens its run, the runs page links the
parent to its review and filters the pruned trials, and the page follows a running search."""
import json
import re

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import assert_no_dash_errors, served, wait_drawn
from tests.test_accessibility import axe_script, set_theme, severe_violations, unnamed_figures  # noqa: F401 (a fixture)
from tests.test_search_review import finals, run_real_search
from training import contract as C

pytestmark = pytest.mark.browser
TIMEOUT = 30000
GRAPHS = ("search-history", "search-intermediate", "search-fanova", "search-forest", "search-slice", "search-contour")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """(dashboard URL, tracking URI, parent run id, experiment id) over a real search's store."""
    root = tmp_path_factory.mktemp("search-browser")
    uri, parent = run_real_search(root)
    with served(["-m", "dashboard", "--port", "{port}"], root / "server.log", env={"MLFLOW_TRACKING_URI": uri}) as s:
        yield s.url, uri, parent, MlflowClient(uri).get_run(parent).info.experiment_id


def traces(page, graph_id: str) -> list[dict]:
    """The figure's traces as Plotly holds them in the page: name, mode, x, y, customdata."""
    return page.evaluate("""id => document.querySelector('#' + id + ' .js-plotly-plot').data.map(t =>
        ({name: t.name || null, mode: t.mode || null, type: t.type, x: Array.from(t.x || []),
          y: Array.from(t.y || []), customdata: t.customdata ? Array.from(t.customdata) : null}))""", graph_id)


def open_review(page, url, parent):
    page.goto(f"{url}/search/{parent}")
    wait_drawn(page, GRAPHS, TIMEOUT)


def test_every_figure_draws_and_the_best_so_far_is_the_running_max_of_the_runs_final_metric(page, search):
    url, uri, parent, _ = search
    open_review(page, url, parent)
    for graph in GRAPHS:
        drawn = traces(page, graph)
        assert any(len(t["x"]) or len(t["y"]) for t in drawn), graph
        assert page.locator(f"#{graph} .main-svg").count() >= 1
    running, expected = float("-inf"), {}
    for number, (state, last) in sorted(finals(uri, parent).items()):
        if state == C.SEARCH_COMPLETE:
            running = max(running, last)
            expected[number] = running
    best = next(t for t in traces(page, "search-history") if t["mode"] == "lines")
    drawn = dict(zip(best["x"], best["y"]))
    assert {n: drawn[n] for n in expected} == pytest.approx(expected)
    pruned = [n for n, (state, _) in finals(uri, parent).items() if state == C.SEARCH_PRUNED]
    marks = next(t for t in traces(page, "search-intermediate") if t["name"] == "pruned here")
    assert len(marks["x"]) == len(pruned) > 0
    assert page.locator("#search-fanova-r2").inner_text().startswith("The fANOVA's forest explains")
    assert page.locator("#search-forest-r2").inner_text().startswith("The random forest explains")
    assert page.locator("#search-trials tbody tr").count() == len(finals(uri, parent))
    assert_no_dash_errors(page)


def test_clicking_a_trials_point_opens_its_run(page, search):
    url, uri, parent, _ = search
    open_review(page, url, parent)
    markers = next(t for t in traces(page, "search-history") if t["mode"] == "markers")
    best = max(markers["y"])
    i = min(range(len(markers["y"])), key=lambda k: markers["y"][k])  # the worst trial: far from the best line
    assert markers["y"][i] < best
    page.locator("#search-history").scroll_into_view_if_needed()
    point = page.locator("#search-history .scatterlayer .trace").first.locator("path.point").nth(i)
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    run_id = markers["customdata"][i]
    trial = MlflowClient(uri).get_run(run_id).data.tags[C.TAG_SEARCH_TRIAL]
    assert int(trial) == markers["x"][i]  # the point's run is the trial the axis says
    page.wait_for_url(re.compile(f"/runs/{run_id}$"), timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_the_runs_page_filters_the_pruned_trials_and_opens_the_parents_review(page, search):
    url, uri, parent, exp = search
    pruned = {r.info.run_id for r in MlflowClient(uri).search_runs([exp], f"tags.`{C.TAG_PARENT_RUN_ID}` = '{parent}'")
              if r.data.tags.get(C.TAG_SEARCH_STATE) == C.SEARCH_PRUNED}  # read here, not through MLflow's filter
    page.goto(f"{url}/?experiment={exp}")
    page.wait_for_selector("#runs-grid .ag-row", timeout=TIMEOUT)
    page.locator("#runs-filter").fill(f"tags.`{C.TAG_SEARCH_STATE}` = '{C.SEARCH_PRUNED}'")
    page.locator("#runs-filter").press("Enter")
    page.wait_for_url(re.compile(r"filter="), timeout=TIMEOUT)
    # The rows as drawn, once they are the pruned trials: the table may fetch its blocks again meanwhile (as
    # the view's read ends), and a block being fetched draws rows without their ids.
    shown = "[...document.querySelectorAll('#runs-grid .ag-center-cols-container .ag-row')].map(r => r.getAttribute('row-id'))"
    try:
        expected = json.dumps(sorted(pruned), separators=(",", ":"))  # as JSON.stringify writes it
        page.wait_for_function(f"JSON.stringify(({shown}).sort()) === {json.dumps(expected)}", timeout=TIMEOUT)
    finally:
        assert set(page.evaluate(shown)) == pruned
    # The table's search column says where each was pruned, as its tags do.
    at = {r.info.run_id: r.data.tags[C.TAG_SEARCH_PRUNED_AT] for r in MlflowClient(uri).search_runs(
        [exp], f"tags.`{C.TAG_PARENT_RUN_ID}` = '{parent}'") if r.info.run_id in pruned}
    for rid, epoch in at.items():
        cell = page.locator(f"#runs-grid .ag-center-cols-container .ag-row[row-id='{rid}'] [col-id='search_state']")
        assert cell.inner_text().strip() == f"{C.SEARCH_PRUNED} at {epoch}"
    page.goto(f"{url}/?experiment={exp}")
    page.locator(f"#runs-grid a.run-link[title='{parent}']").click()
    page.wait_for_url(re.compile(f"/search/{parent}$"), timeout=TIMEOUT)
    page.wait_for_selector("#search-history .main-svg", timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_the_page_follows_a_running_search_and_stops_when_it_ends(page, search):
    url, uri, parent, _ = search
    client = MlflowClient(uri)
    client.update_run(parent, status=C.STATUS_RUNNING)  # as the driver leaves it mid-search; restored below
    try:
        open_review(page, url, parent)
        assert page.locator("#search-summary").inner_text().startswith("running")
        client.set_terminated(parent, C.STATUS_FINISHED)
        page.wait_for_function("document.querySelector('#search-summary').innerText.startsWith('finished')",
                               timeout=TIMEOUT)
    finally:
        client.set_terminated(parent, C.STATUS_FINISHED)
    assert_no_dash_errors(page)



@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_search_review_has_no_serious_or_critical_axe_violation(page, search, axe_script, theme):
    """The search review is a page of the README's URL table too: tests/test_accessibility.py's check, run here
    where a real search's store already is."""
    url, _, parent, _ = search
    set_theme(page, theme)
    page.goto(f"{url}/search/{parent}")
    wait_drawn(page, GRAPHS, timeout=TIMEOUT)
    page.wait_for_timeout(800)  # Plotly's transitions, as test_accessibility.settle waits
    assert page.evaluate("document.documentElement.dataset.theme") == theme
    found = severe_violations(page, axe_script) + unnamed_figures(page)
    assert not found, "\n".join(found)
