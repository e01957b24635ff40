"""Runs logged from the user's own loop (both examples) in real Chromium: run, layer, unit and compare pages
render with no console errors, unit pages show the top 8 images and a verdict, and a built-in unit is
matched on its unit page with a unit of example (a)."""
import pytest

from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import counterpart, hidden_layers, resolve
from dashboard.read import store
from tests.conftest import assert_no_dash_errors, served
from tests.test_examples import EXAMPLES

pytestmark = [pytest.mark.browser, pytest.mark.slow]
VERDICT_WORDS = ("class-selective", "feature-selective", "dead")


@pytest.fixture(scope="module")
def own_dashboard(examples_store, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("own-dashboard") / "server.log"
    with served(["-m", "dashboard", "--port", "{port}"], log_path, env={"MLFLOW_TRACKING_URI": examples_store[0]},
                timeout=180) as server:
        yield server.url
    assert "Traceback" not in server.log(), server.log()[-3000:]


def _open(page, url: str, selector: str) -> None:
    page.goto(url)
    page.wait_for_selector(selector, timeout=60000)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_run_and_layer_pages_of_each_example_render(page, own_dashboard, in_examples_store, name):
    rid = in_examples_store[name]
    _open(page, f"{own_dashboard}/runs/{rid}", "#run-architecture .main-svg, .js-plotly-plot")
    page.wait_for_timeout(3000)  # the sections below the slider fill in by callback
    assert "Traceback" not in page.content()
    assert_no_dash_errors(page)
    for layer in range(1, len(hidden_layers(store.get_run(rid))) + 1):
        _open(page, f"{own_dashboard}/runs/{rid}/neurons?layer={layer}", ".neurons-tile")
        assert page.locator(".neurons-tile").count() == resolve(rid, layer).units
        assert page.locator(".neurons-tile img").count() == resolve(rid, layer).units
        assert_no_dash_errors(page)


@pytest.mark.parametrize("name, layer, unit", [("writeup_d", 1, 5), ("writeup_d", 2, 3), ("pytorch_mnist", 1, 7),
                                               ("pytorch_mnist", 3, 11)])
def test_unit_pages_show_the_top_8_images_and_a_verdict(page, own_dashboard, in_examples_store, name, layer, unit):
    rid = in_examples_store[name]
    t = resolve(rid, layer, None, unit)
    stats, (_, labels) = S.layer_stats(t), S.test_images()
    _open(page, f"{own_dashboard}/runs/{rid}/neurons/{layer}/{unit}", "#unit-top img")
    assert page.locator("#unit-top img").count() == 8
    captions = page.locator("#unit-top figcaption").all_inner_texts()
    assert captions == [f"{labels[i]} · {stats.acts[i, unit]:.3f}" for i in stats.top[unit]]
    summary = page.locator("#unit-summary").inner_text()
    assert stats.verdicts[unit] in summary and stats.verdicts[unit].startswith(VERDICT_WORDS)
    assert_no_dash_errors(page)


def test_a_builtin_unit_is_matched_on_its_unit_page_with_a_unit_of_example_a(page, own_dashboard,
                                                                            in_examples_store):
    builtin, own = in_examples_store["builtin"], in_examples_store["writeup_d"]
    t = resolve(builtin, 1, None, 3)
    match = S.best_match(t, 3, counterpart(t, own))
    _open(page, f"{own_dashboard}/runs/{builtin}/neurons/1/3?compare={own}", "#unit-compare-corr")
    assert page.locator("#unit-compare-corr").inner_text() == f"r = {match.corr:.2f}"
    assert f"unit {match.unit}, correlation" in page.content()
    assert_no_dash_errors(page)


def test_the_compare_page_shows_both_examples_and_the_builtin_run(page, own_dashboard, in_examples_store):
    ids = ",".join(in_examples_store[k] for k in ("writeup_d", "pytorch_mnist", "builtin"))
    _open(page, f"{own_dashboard}/compare?runs={ids}", ".js-plotly-plot")
    page.wait_for_timeout(2000)
    assert_no_dash_errors(page)
