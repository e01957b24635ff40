"""MLflow's own UI over our runs: it shows a run's description, and our run and compare pages link to the
same runs there, opened in its model-training view.

The links are unit tested here; the browser tests train a run with the real CLI, serve the store with a
real `mlflow server`, and open both UIs in Chromium.
"""
import json
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from dashboard.read import mlflow_links
from tests.conftest import REPO, all_runs, served, sqlite_uri, start_server
from training import contract as C

RUN = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


def _run(experiment_id: str, run_id: str):
    return SimpleNamespace(info=SimpleNamespace(experiment_id=experiment_id, run_id=run_id))


def _route(url: str) -> tuple[str, dict]:
    """The MLflow UI's route (after '#') and its query, decoded."""
    route = urlsplit(urlsplit(url).fragment)
    return route.path, {k: v[0] for k, v in parse_qs(route.query).items()}


# ---- the link builder -----------------------------------------------------------------------

def test_links_open_the_same_runs_in_the_model_training_view(monkeypatch):
    monkeypatch.setenv(mlflow_links.ENV_UI_URL, "http://127.0.0.1:5000/")
    url = mlflow_links.run_url("3", RUN)
    assert url.startswith("http://127.0.0.1:5000/#/")
    assert _route(url) == (f"/experiments/3/runs/{RUN}", {"workflowType": "machine_learning"})

    path, query = _route(mlflow_links.compare_url([_run("3", RUN), _run("1", OTHER), _run("3", OTHER)]))
    assert path == "/compare-runs" and query["workflowType"] == "machine_learning"
    assert json.loads(query["runs"]) == [RUN, OTHER, OTHER]  # MLflow's UI reads both as JSON lists
    assert json.loads(query["experiments"]) == ["1", "3"]

    assert _route(mlflow_links.experiment_url("3")) == ("/experiments/3", {"workflowType": "machine_learning"})


def test_a_ui_under_a_path_keeps_its_path(monkeypatch):
    monkeypatch.setenv(mlflow_links.ENV_UI_URL, "https://example.org/mlflow/")
    assert mlflow_links.run_url("1", RUN).startswith("https://example.org/mlflow/#/experiments/1/runs/")


def test_without_a_ui_url_or_a_tracking_server_there_is_no_link(monkeypatch):
    monkeypatch.delenv(mlflow_links.ENV_UI_URL, raising=False)  # the store is this test's SQLite file
    assert mlflow_links.ui_base() is None
    assert mlflow_links.run_url("1", RUN) is None and mlflow_links.compare_url([_run("1", RUN)]) is None


def test_a_tracking_server_is_its_own_ui_and_its_credentials_never_reach_a_page(monkeypatch):
    monkeypatch.delenv(mlflow_links.ENV_UI_URL, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ann:secret@mlflow-host:5000/")
    assert mlflow_links.ui_base() == "http://mlflow-host:5000"
    assert "secret" not in mlflow_links.run_url("1", RUN)


@pytest.mark.parametrize("value", ["javascript:alert(1)//", "ftp://host/", "localhost:5000", "http://", "  "])
def test_only_an_http_url_makes_a_link(monkeypatch, value):
    monkeypatch.setenv(mlflow_links.ENV_UI_URL, value)
    assert mlflow_links.run_url("1", RUN) is None
    assert mlflow_links.compare_url([]) is None


# ---- the MLflow UI in Chromium --------------------------------------------------------------

def _plain(markdown_line: str) -> str:
    """A markdown line as the UI renders its text: no emphasis marks, list bullets or heading marks."""
    return " ".join(re.sub(r"^\s*(?:[-*+]|#+)\s+", "", markdown_line).replace("**", "").replace("`", "").split())


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    """A run trained by the real CLI in a fresh store, and `mlflow server` over that store."""
    root = tmp_path_factory.mktemp("mlflow-ui")
    uri = sqlite_uri(root)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run([sys.executable, "-m", "training.train", "--train-size", "1000", "--epochs", "1"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = all_runs(uri, "mnist")
    server = start_server(["-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                           "--port", "{port}", "--workers", "1"], root / "mlflow.log",
                          env={"MLFLOW_TRACKING_URI": uri}, timeout=240, own_group=True)
    try:
        yield SimpleNamespace(url=server.url, uri=uri, run=run)
    finally:
        os.killpg(server.proc.pid, signal.SIGTERM)  # the server, its uvicorn and its job consumers
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        server.kill()  # what is left of its group: the job consumers can outlive the server by seconds


def _expect_model_training_run_page(pg, run) -> None:
    """The MLflow run page of `run`, in the model-training view: the URL says so, and so does the sidebar."""
    path, query = _route(pg.url)
    assert path == f"/experiments/{run.info.experiment_id}/runs/{run.info.run_id}", pg.url
    assert query.get("workflowType") == "machine_learning", pg.url
    pg.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=60000)
    # Only the model-training view lists the model registry in its sidebar; GenAI lists its evaluation runs.
    pg.get_by_text("Model registry", exact=True).wait_for(timeout=30000)
    assert pg.get_by_text("Evaluation runs", exact=True).count() == 0


def _expect_description(pg, note: str) -> None:
    expand = pg.get_by_role("button", name="Expand description")
    expand.wait_for(timeout=30000)
    expand.click()
    for line in filter(None, map(_plain, note.splitlines())):
        assert pg.get_by_text(line, exact=False).first.is_visible(), line


@pytest.mark.slow
@pytest.mark.browser
def test_the_mlflow_ui_shows_a_runs_description(page, mlflow_ui, tmp_path):
    note = mlflow_ui.run.data.tags.get(C.TAG_NOTE, "")
    assert note.strip(), "the run has no description"
    page.goto(mlflow_links.run_url(mlflow_ui.run.info.experiment_id, mlflow_ui.run.info.run_id, base=mlflow_ui.url))
    _expect_model_training_run_page(page, mlflow_ui.run)
    _expect_description(page, note)
    page.screenshot(path=str(tmp_path / "mlflow_ui_run.png"))


@pytest.mark.slow
@pytest.mark.browser
def test_our_run_and_compare_pages_open_the_same_run_in_the_mlflow_ui(page, mlflow_ui, tmp_path):
    run = mlflow_ui.run
    env = {"MLFLOW_TRACKING_URI": mlflow_ui.uri, mlflow_links.ENV_UI_URL: mlflow_ui.url}
    with served(["-m", "dashboard", "--port", "{port}"], tmp_path / "dashboard.log", env=env) as ours:
        page.goto(f"{ours.url}/runs/{run.info.run_id}")
        link = page.locator("#run-mlflow-link")
        link.wait_for(timeout=60000)
        page.screenshot(path=str(tmp_path / "run_page_mlflow_link.png"))
        with page.context.expect_page() as opened:
            link.click()
        theirs = opened.value
        _expect_model_training_run_page(theirs, run)
        _expect_description(theirs, run.data.tags[C.TAG_NOTE])
        theirs.close()

        page.goto(f"{ours.url}/compare?runs={run.info.run_id}")
        with page.context.expect_page() as opened:
            page.locator("#compare-mlflow-link").click()
        theirs = opened.value
        path, query = _route(theirs.url)
        assert path == "/compare-runs" and query["workflowType"] == "machine_learning"
        assert json.loads(query["runs"]) == [run.info.run_id]
        theirs.get_by_text("Comparing 1 Runs from 1 Experiment").wait_for(timeout=60000)
        theirs.get_by_text("Model registry", exact=True).wait_for(timeout=30000)


@pytest.mark.browser
def test_without_an_mlflow_ui_our_pages_show_no_link(page, dashboard_url, trained_store):
    assert mlflow_links.ENV_UI_URL not in os.environ, "unset MLFLOW_UI_URL to run this test"
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids['sigmoid']}")
    page.locator("#run-compare-link").wait_for(timeout=60000)
    assert page.locator("#run-mlflow-link").count() == 0
    page.goto(f"{dashboard_url}/compare?runs={trained_store.run_ids['sigmoid']}")
    page.locator(".legend").wait_for(timeout=60000)
    assert page.locator("#compare-mlflow-link").count() == 0
