"""The plotly.js each page loads: the cartesian bundle where every trace it draws is in it, the full one
elsewhere, and a fresh load when a page needs more than the bundle already running."""
import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dashboard.serving import lean_pages as B
from tests.conftest import REPO, assert_no_dash_errors

TIMEOUT = 20000
# Where each page that draws a non-cartesian trace gets it from, and a path of that page.
NON_CARTESIAN_VIEWS = {"views/runs_view.py": "/", "views/run_detail_view.py": "/runs/0123abcd",
                       "views/neurons/neuron_map_view.py": "/runs/0123abcd/neurons/map"}


def trace_types(source: str) -> set[str]:
    """Trace types a module builds with plotly.graph_objects, e.g. go.Scattergl( -> 'scattergl'."""
    return {m.lower() for m in re.findall(r"\bgo\.([A-Z][A-Za-z0-9]*)\(", source)} - {"figure"}


def test_every_non_cartesian_trace_is_drawn_only_on_a_page_that_loads_the_full_bundle():
    found = {}
    for path in (REPO / "dashboard").rglob("*.py"):
        extra = trace_types(path.read_text()) - B.CARTESIAN_TRACES
        if extra:
            found[str(path.relative_to(REPO / "dashboard"))] = extra
    assert found, "the tripwire found no trace at all: its pattern is stale"
    assert set(found) <= set(NON_CARTESIAN_VIEWS), f"add the page to lean_pages.FULL_PAGES: {found}"
    for module, page_path in NON_CARTESIAN_VIEWS.items():
        assert any(re.match(p, page_path) for p in B.FULL_PAGES), module
    assert not any(re.match(p, "/compare") or re.match(p, "/runs/0123abcd/neurons/1/0") for p in B.FULL_PAGES)


def _make_dry_run(target: str) -> str:
    """What make would run to build `target` from scratch (--always-make), without running it."""
    out = subprocess.run(["make", "--dry-run", "--always-make", target], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr  # e.g. "No rule to make target": make builds another file
    return out.stdout


def test_make_install_fetches_the_pinned_bundle_to_where_the_module_reads_it():
    fetch = f"-m {B.__name__}"
    assert fetch in _make_dry_run("install")
    # Make has a rule for the very file the module reads (its version in the name), and the rule is the fetch.
    assert fetch in _make_dry_run(os.path.relpath(B.bundle_path(), REPO))
    path = B.bundle_path()
    assert path.is_file(), "run `make install`: it fetches the cartesian bundle"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == B.SHA256, f"{path} is not the pinned bundle"


def test_without_the_bundle_every_page_is_told_to_load_the_full_one(monkeypatch):
    monkeypatch.setattr(B, "cartesian_available", lambda: False)
    assert '"cartesian": null' in B.loader("/")
    monkeypatch.setattr(B, "cartesian_available", lambda: True)
    assert f'"cartesian": "/app/{B.ROUTE[1:]}"' in B.loader("/app/")


def loaded_scripts(page) -> list[str]:
    return page.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)"
                         ".filter(n => n.includes('plotly'))")


@pytest.mark.browser
def test_the_compare_page_draws_with_the_cartesian_bundle_and_the_runs_page_reloads_for_the_full_one(
        page, dashboard_url, trained_store):
    assert B.cartesian_available(), "run `make install`: it fetches the cartesian bundle"
    ids = [trained_store.run_ids[k] for k in ("sigmoid", "relu")]
    page.goto(f"{dashboard_url}/compare?runs={','.join(ids)}")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4", timeout=TIMEOUT)
    scripts = loaded_scripts(page)
    assert any(B.ROUTE in s for s in scripts) and not any(s.endswith("/plotly.min.js") for s in scripts), scripts
    assert page.evaluate("window.mnistlabPlotly.loaded") == "cartesian"
    exp = MlflowClient(trained_store.tracking_uri).get_experiment_by_name("dash-tests").experiment_id
    # As a dcc.Link moves to another page: Dash alone would render it with the cartesian bundle.
    page.evaluate(f"() => {{ history.pushState({{}}, '', '/?experiment={exp}'); "
                  "window.dispatchEvent(new CustomEvent('_dashprivate_pushstate')); }")
    page.wait_for_function("window.mnistlabPlotly && window.mnistlabPlotly.loaded === 'full'", timeout=TIMEOUT)
    page.wait_for_selector(".js-plotly-plot .parcoords", timeout=TIMEOUT)  # parcoords: only in the full bundle
    assert any(s.endswith("/plotly.min.js") for s in loaded_scripts(page))
    page.go_back()  # and back: the compare page draws again
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4 && "
                           "location.pathname === '/compare'", timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_lean_pages_leave_ag_grid_table_and_polyfill_out_and_full_pages_keep_them(monkeypatch):
    from dashboard.app import server
    monkeypatch.setattr(B, "cartesian_available", lambda: True)
    client = server.test_client()
    for path, lean in (("/compare?runs=x", True), ("/runs/0123abcd/neurons/1/0", True), ("/", False),
                       ("/runs/0123abcd", False), ("/runs/0123abcd/neurons/map", False)):
        html = client.get(path).get_data(as_text=True)
        for script in ("/dash_ag_grid/", "/dash_table/", "/deps/polyfill@"):
            assert (script not in html) == lean, (path, script)
        assert (B.RUNTIME_ROUTE in html) == lean, path
        assert "window.mnistlabPlotly" in html
    monkeypatch.setattr(B, "cartesian_available", lambda: False)  # no bundle: every page as Dash serves it
    html = client.get("/compare?runs=x").get_data(as_text=True)
    assert "/dash_ag_grid/" in html and "/deps/polyfill@" in html and B.RUNTIME_ROUTE not in html


@pytest.mark.browser
def test_a_lean_page_runs_the_published_regenerator_runtime_in_place_of_the_polyfill(page, dashboard_url,
                                                                                      trained_store):
    assert B.cartesian_available(), "run `make install`: it fetches the cartesian bundle"
    responses = []
    page.on("response", lambda r: responses.append(r))
    page.goto(f"{dashboard_url}/compare?runs={trained_store.run_ids['sigmoid']}")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1", timeout=TIMEOUT)
    runtime = [r for r in responses if r.url.endswith(B.RUNTIME_ROUTE)]
    assert len(runtime) == 1 and runtime[0].status == 200, [r.url for r in responses]
    assert not [r.url for r in responses if "/deps/polyfill@" in r.url]
    # What Dash's scripts take from the polyfill: a working regeneratorRuntime.  A generator as Babel compiles
    # `function* f() { return (yield 41) + 1; }`.
    assert page.evaluate("""() => { var rt = regeneratorRuntime;
        var f = rt.mark(function f() { return rt.wrap(function f$(ctx) { while (1) switch (ctx.prev = ctx.next) {
            case 0: ctx.next = 2; return 41;
            case 2: return ctx.abrupt("return", ctx.sent + 1);
            case "end": return ctx.stop(); } }, f); });
        var it = f(); return [it.next().value, it.next(41).value]; }""") == [41, 42]
    # The bytes served are the ones npm published (their sha256 as its README records it).
    published = re.search(r"sha256 of\s+runtime\.js ([0-9a-f]{64})", (B.RUNTIME.parent / "README.md").read_text())
    assert published and hashlib.sha256(runtime[0].body()).hexdigest() == published[1]
    assert_no_dash_errors(page)


def test_the_bundle_and_dash_s_large_scripts_carry_the_compile_hint_and_small_ones_do_not():
    from dashboard.app import server
    client = server.test_client()
    html = client.get("/compare?runs=x").get_data(as_text=True)
    scripts = re.findall(r'<script src="([^"]+)"', html)
    hinted = {s.split("/")[-1].split(".")[0] for s in scripts if client.get(s).data.startswith(B.COMPILE_HINT)}
    assert {"react-dom@18", "dash_renderer", "dash_core_components", "dash_core_components-shared",
            "dash_html_components"} <= hinted, hinted
    assert not hinted & {"react@18", "prop-types@15", "clientside", "regenerator-runtime-0"}, hinted
    if B.cartesian_available():
        bundle = client.get(B.ROUTE).data
        assert bundle == B.COMPILE_HINT + B.bundle_path().read_bytes()


# When, on the page's own clock, the first table row with a run link was drawn and the first plotly.js <script>
# was put in the page (the loader's <link rel=preload> only downloads it; a <script> runs it).
RECORD_ORDER = """
window.mnistlabOrder = {};
new MutationObserver(() => {
  const o = window.mnistlabOrder;
  if (!o.row && document.querySelector('.ag-row .run-link')) o.row = performance.now();
  if (!o.plotly && [...document.scripts].some(s => /plotly[^/]*\\.js/.test(s.src))) o.plotly = performance.now();
}).observe(document, {childList: true, subtree: true});
"""


@pytest.mark.browser
def test_the_runs_page_runs_plotly_only_after_its_table_shows_rows_and_then_draws_its_figures(
        page, dashboard_url, trained_store):
    exp = MlflowClient(trained_store.tracking_uri).get_experiment_by_name("dash-tests").experiment_id
    page.context.add_init_script(RECORD_ORDER)
    page.goto(f"{dashboard_url}/?experiment={exp}")
    page.wait_for_selector("#runs-parallel .parcoords", timeout=TIMEOUT)  # the figures came, with the full bundle
    order = page.evaluate("window.mnistlabOrder")
    assert order.get("row") and order.get("plotly") and order["row"] < order["plotly"], order
    assert page.evaluate("window.mnistlabPlotly.loaded") == "full"
    assert_no_dash_errors(page)
