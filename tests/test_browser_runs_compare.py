"""The runs and compare pages in real headless Chromium, over a store of real short training runs."""
import re
from urllib.parse import quote

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import assert_no_dash_errors, log_contract_run, served, sqlite_uri, wait_runs_review

pytestmark = pytest.mark.browser
TIMEOUT = 20000


@pytest.fixture(scope="module")
def experiment(trained_store):
    return MlflowClient(trained_store.tracking_uri).get_experiment_by_name("dash-tests").experiment_id


def wait_figures(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}", timeout=TIMEOUT)
    page.wait_for_function("!document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=TIMEOUT)


def test_runs_page_links_each_run_and_compare_opens_three_ticked_runs(page, dashboard_url, trained_store, experiment):
    page.goto(f"{dashboard_url}/?experiment={experiment}")
    page.wait_for_selector(".ag-row .run-link", timeout=TIMEOUT)
    wait_runs_review(page)
    assert page.locator(".ag-center-cols-container .ag-row").count() == 4
    hrefs = {page.locator(".run-link").nth(i).get_attribute("href") for i in range(4)}
    assert hrefs == {f"/runs/{rid}" for k, rid in trained_store.run_ids.items() if k != "foreign"}
    boxes = page.locator(".ag-row .ag-checkbox-input")
    for i in range(3):
        boxes.nth(i).check()
    page.wait_for_function("document.querySelector('#runs-compare')?.textContent === 'Compare 3'", timeout=TIMEOUT)
    page.locator("#runs-compare").click()
    page.wait_for_url(re.compile(r"/compare\?runs=([0-9a-f]{32},){2}[0-9a-f]{32}$"), timeout=TIMEOUT)
    wait_figures(page, 4)
    assert page.locator(".legend a").count() == 3
    assert_no_dash_errors(page)


def test_a_bad_filter_shows_mlflows_message_on_the_page_and_the_url_keeps_it(page, dashboard_url, experiment):
    page.goto(f"{dashboard_url}/?experiment={experiment}")
    page.wait_for_selector(".ag-row .run-link", timeout=TIMEOUT)
    page.fill("#runs-filter", "metrics.test_acc >")
    page.press("#runs-filter", "Enter")
    page.wait_for_function("document.querySelector('#runs-message')?.textContent.includes('bad filter')",
                           timeout=TIMEOUT)
    assert "filter=metrics.test_acc" in page.url
    page.reload()  # the URL restores the same view
    page.wait_for_function("document.querySelector('#runs-message')?.textContent.includes('bad filter')",
                           timeout=TIMEOUT)
    assert page.input_value("#runs-filter") == "metrics.test_acc >"
    assert_no_dash_errors(page)


def test_a_good_filter_narrows_the_table(page, dashboard_url, experiment):
    page.goto(f"{dashboard_url}/?experiment={experiment}&filter={quote(chr(39).join(['params.activation = ', 'relu', '']))}")
    page.wait_for_selector(".ag-row .run-link", timeout=TIMEOUT)
    page.wait_for_timeout(300)
    assert page.locator(".ag-center-cols-container .ag-row").count() == 2  # the relu MLP and the CNN
    assert_no_dash_errors(page)


def test_all_of_this_view_compares_every_run_the_filter_selects(page, dashboard_url, trained_store, experiment):
    relu = "params.activation = 'relu'"
    page.goto(f"{dashboard_url}/?experiment={experiment}&filter={quote(relu)}")
    page.wait_for_selector(".ag-row .run-link", timeout=TIMEOUT)
    page.locator("#runs-all input").check()  # no row ticked: the filter's runs, whether loaded or not
    page.wait_for_function("document.querySelector('#runs-compare')?.textContent === 'Compare 2'", timeout=TIMEOUT)
    expected = {r.info.run_id for r in MlflowClient(trained_store.tracking_uri).search_runs([experiment], relu)}
    assert set(page.get_attribute("#runs-compare", "href").split("runs=")[1].split(",")) == expected
    assert_no_dash_errors(page)


def test_compare_shows_messages_for_bad_ids_and_what_a_foreign_run_lacks(page, dashboard_url, trained_store):
    ids = trained_store.run_ids
    page.goto(f"{dashboard_url}/compare?runs={ids['sigmoid']},{ids['foreign']},not-a-run,{'0' * 32}")
    wait_figures(page, 4)
    text = page.locator(".page").inner_text()
    assert "not a run id" in text and "not in the store" in text
    assert "plain script: no train_loss" in text and "accuracy" in text
    assert_no_dash_errors(page)


def test_compare_controls_live_in_the_url_so_back_forward_and_reload_restore_them(page, dashboard_url, trained_store):
    ids = trained_store.run_ids
    base = f"{dashboard_url}/compare?runs={ids['sigmoid']},{ids['sigmoid_b']}"
    page.goto(base)
    wait_figures(page, 4)
    assert page.locator("text=show all params").count() == 1
    rows_differing = page.locator(".data-table").nth(1).locator("tbody tr").count()
    page.locator("#compare-all-params input").check()
    page.wait_for_url(re.compile(r"params=all"), timeout=TIMEOUT)
    wait_figures(page, 4)
    rows_all = page.locator(".data-table").nth(1).locator("tbody tr").count()
    assert rows_all > rows_differing
    page.go_back()
    page.wait_for_function("!location.search.includes('params=all')", timeout=TIMEOUT)
    page.wait_for_function(f"document.querySelectorAll('.data-table')[1].querySelectorAll('tbody tr').length"
                           f" === {rows_differing}", timeout=TIMEOUT)
    page.goto(base + "&smooth=0.6")
    wait_figures(page, 4)
    assert page.locator("text=EMA smoothing 0.60").count() == 4  # one per chart
    page.reload()
    wait_figures(page, 4)
    assert page.locator("text=EMA smoothing 0.60").count() == 4
    assert page.input_value("#compare-link").endswith("smooth=0.6")
    assert_no_dash_errors(page)


def test_the_theme_toggle_switches_to_dark_and_remembers_it(page, dashboard_url, experiment):
    page.goto(f"{dashboard_url}/?experiment={experiment}")
    page.wait_for_selector(".ag-row .run-link", timeout=TIMEOUT)
    page.click("#app-theme-toggle")
    page.wait_for_function("document.documentElement.dataset.theme === 'dark'", timeout=TIMEOUT)
    page.reload()
    page.wait_for_function("document.documentElement.dataset.theme === 'dark'", timeout=TIMEOUT)
    assert_no_dash_errors(page)


@pytest.fixture(scope="module")
def live_store(tmp_path_factory):
    """Its own store and server: this test changes runs, which the shared trained store must not see."""
    root = tmp_path_factory.mktemp("live-store")
    uri = sqlite_uri(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        rid = log_contract_run("still training", {"test_acc": [0.1, 0.5]}, {"lr": 3.0}, experiment="live",
                               status="RUNNING")
    with served(["-m", "dashboard", "--port", "{port}"], root / "server.log", env={"MLFLOW_TRACKING_URI": uri}) as server:
        yield server.url, uri, rid


def test_a_running_run_updates_live_and_polling_stops_when_it_finishes(page, live_store):
    url, uri, rid = live_store
    page.goto(url + "/")
    page.wait_for_selector(".status-RUNNING", timeout=TIMEOUT)
    assert "1 running" in page.inner_text("#runs-summary")
    client = MlflowClient(uri)
    client.log_metric(rid, "test_acc", 0.875, step=2)
    client.set_terminated(rid, "FINISHED")
    page.wait_for_selector(".status-FINISHED", timeout=TIMEOUT)  # no reload: the Interval brought it
    page.wait_for_function("document.querySelector('.ag-row')?.innerText.includes('87.50 %')", timeout=TIMEOUT)
    assert "running" not in page.inner_text("#runs-summary")
    polls = []
    page.on("request", lambda r: polls.append(r.url) if "_dash-update-component" in r.url else None)
    page.wait_for_timeout(4000)  # longer than the 3 s polling interval
    assert polls == []
    assert_no_dash_errors(page)
