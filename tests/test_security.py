"""Hostile stores: nothing in them is unpickled, nothing typed into them executes, and the dashboard writes only labels
and reviews."""
import ast

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import REPO, assert_no_dash_errors, served, sqlite_uri
from training import contract as C

XSS_RUN_NAME = '<img src=x onerror="window.__xss=1">'
XSS_NEURON_NAME = "<script>window.__xss=2</script>"


class Evil:
    """Unpickling this creates a file: proof that something executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from training.config import RunConfig
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client

    root = tmp_path_factory.mktemp("hostile")
    uri = sqlite_uri(root)
    marker = root / "pwned"
    with pytest.MonkeyPatch.context() as env:  # undone when the store is built
        env.setenv("MLFLOW_TRACKING_URI", uri)
        data = load()
        config = RunConfig(sizes=(784, 8, 10), lr=3.0, epochs=1, train_size=500, experiment="hostile",
                           run_name=XSS_RUN_NAME)
        sink = MlflowSink(client(), [config], data)
        sink.finish(train_cohort([config], data, sink).params)
        named = sink.run_ids[0]
        c = MlflowClient(uri)
        c.set_tag(named, C.neuron_name_tag(1, 0), XSS_NEURON_NAME)
        c.set_tag(named, "note", '<a href="javascript:window.__xss=3">click</a>')

        evil_run = c.create_run(c.get_experiment_by_name("hostile").experiment_id, run_name="evil snapshot")
        evil = evil_run.info.run_id
        # A run of our trainer in every param, so each page gets as far as reading its snapshot.
        for key, value in {**RunConfig(sizes=(784, 8, 10)).as_params(), C.PARAM_LAYERS: "fc1,fc2"}.items():
            c.log_param(evil, key, value)
        c.log_metric(evil, C.TEST_ACC, 0.5, step=0)
        npz = root / "epoch_0000.npz"
        np.savez(npz, **{C.weight_key("fc1"): np.array([Evil(str(marker))], dtype=object)})
        c.log_artifact(evil, str(npz), C.SNAPSHOT_DIR)
        c.set_terminated(evil)

    with served(["-m", "dashboard", "--port", "{port}"], root / "server.log", env={"MLFLOW_TRACKING_URI": uri}) as server:
        class Hostile:
            tracking_uri = uri
            base_url = server.url
            pwned = marker
            named_run = named
            evil_run = evil
        yield Hostile


def test_a_pickled_snapshot_is_refused_and_never_executed(hostile, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", hostile.tracking_uri)
    from dashboard.read import store
    with pytest.raises(Exception) as e:
        store.load_snapshot(hostile.evil_run, 0)
    assert "pickle" in str(e.value).lower()
    assert not hostile.pwned.exists()


@pytest.mark.browser
@pytest.mark.parametrize("path", ["/runs/{evil}", "/runs/{evil}?epoch=0", "/runs/{evil}/neurons?layer=1",
                                  "/runs/{evil}/neurons/1/0"])
def test_pages_over_a_pickled_snapshot_show_a_message_and_execute_nothing(hostile, page, path):
    page.goto(hostile.base_url + path.format(evil=hostile.evil_run))
    page.wait_for_load_state("networkidle")
    # The store's refusal, as a message on the page (store.load_snapshot's wording).
    page.wait_for_function("document.querySelector('main')?.innerText.includes('never unpickled')", timeout=30000)
    message = page.locator(".message-error", has_text="never unpickled").first.inner_text()
    assert (f"{C.snapshot_path(0)} of run {hostile.evil_run[:8]} cannot be shown: {C.weight_key('fc1')} holds "
            "Python objects (a pickle)") in message
    assert not hostile.pwned.exists()
    assert page.locator(".dash-fe-error__title").count() == 0
    assert "Traceback" not in page.content()


# Where each page shows the hostile names: (CSS selector, the markup an element there must hold as its text).
NAMES_SHOWN = {
    "/?experiment={exp}": [("#runs-grid .ag-cell a.run-link", XSS_RUN_NAME)],
    "/compare?runs={run}": [(".legend a", XSS_RUN_NAME), ("table.data-table th", XSS_RUN_NAME)],
    "/runs/{run}": [(".run-detail h2", XSS_RUN_NAME)],
    "/runs/{run}/neurons?layer=1": [("h2", XSS_RUN_NAME), ("#neurons-tiles .neurons-tile-name", XSS_NEURON_NAME)],
    "/runs/{run}/neurons/1/0": [("h2", XSS_RUN_NAME), ("#unit-name-shown", XSS_NEURON_NAME)],
}
# Every element a selector matches: its text, and whether it holds an <img> or <script> element.
SHOWN_JS = """([selector, markup]) => [...document.querySelectorAll(selector)].map(
    e => [e.textContent, e.querySelector('img, script') !== null])"""


@pytest.mark.browser
@pytest.mark.parametrize("path", list(NAMES_SHOWN))
def test_names_and_tags_render_as_text_and_never_execute(hostile, page, path):
    exp = MlflowClient(hostile.tracking_uri).get_run(hostile.named_run).info.experiment_id
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(hostile.base_url + path.format(run=hostile.named_run, exp=exp))
    for selector, markup in NAMES_SHOWN[path]:  # the page rendered, names and all, as text
        try:
            page.wait_for_function(f"args => ({SHOWN_JS})(args).some(([text]) => text.includes(args[1]))",
                                   arg=[selector, markup], timeout=30000)
        except PlaywrightTimeout:
            pytest.fail(f"{selector} never showed {markup!r} as text: {page.evaluate(SHOWN_JS, [selector, markup])}; "
                        f"the page: {page.locator('body').inner_text()[:300]!r}")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)  # an <img onerror> fires once its load fails
    for selector, markup in NAMES_SHOWN[path]:
        shown = page.evaluate(SHOWN_JS, [selector, markup])
        assert [text for text, markup_as_element in shown if markup in text and not markup_as_element], shown
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert page.locator("img[src='x']").count() == 0 and page.locator("script:text('__xss')").count() == 0
    assert page.locator("a[href^='javascript:']").count() == 0
    assert not "".join(page.locator(".message-error").all_inner_texts()).strip()  # (empty until an error)
    assert "Traceback" not in page.content()
    assert_no_dash_errors(page)


def _mlflow_write_calls(tree: ast.AST) -> list[str]:
    writes = {"log_metric", "log_metrics", "log_param", "log_params", "log_batch", "log_artifact", "log_artifacts",
              "log_text", "log_dict", "log_figure", "log_image", "log_table", "log_inputs", "log_input",
              "log_model", "set_tag", "set_tags", "delete_tag", "delete_run", "delete_experiment", "create_run",
              "create_experiment", "set_terminated", "update_run", "rename_experiment", "set_experiment_tag",
              "set_experiment", "restore_run", "restore_experiment", "start_run", "end_run"}
    return [node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in writes]


def test_the_dashboard_writes_only_neuron_labels_and_only_through_one_function():
    """Neuron labels through one function; reviews (#30) through dashboard.read.reviews alone, to their own runs."""
    found = {}
    for path in (REPO / "dashboard").rglob("*.py"):
        if path.name == "screenshots.py":
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                calls = _mlflow_write_calls(fn)
                if calls:
                    found[f"{path.relative_to(REPO)}:{fn.name}"] = calls
    assert found == {"dashboard/read/store.py:set_neuron_label": ["set_tag", "set_tag"],
                     # Reviews (#30) write only to runs of their own experiment (reviews._get checks it).
                     "dashboard/read/reviews.py:_experiment_id": ["create_experiment"],
                     "dashboard/read/reviews.py:create": ["create_run", "log_param", "set_terminated"],
                     "dashboard/read/reviews.py:save": ["log_param", "log_batch", "update_run"],
                     "dashboard/read/reviews.py:add_comment": ["log_param", "log_batch"],
                     "dashboard/read/reviews.py:add_view": ["log_batch"]}


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on a TCP port, read from the kernel's own table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":  # 0A: LISTEN
                found.add(addr)
    return found


@pytest.mark.browser
def test_the_dashboard_binds_to_loopback_with_debug_off_by_default(dashboard_url, page):
    port = int(dashboard_url.rsplit(":", 1)[1])
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex
    page.goto(dashboard_url + "/")
    page.wait_for_load_state("networkidle")
    assert page.locator("[class^=dash-debug-menu]").count() == 0  # no dev tools without --debug

