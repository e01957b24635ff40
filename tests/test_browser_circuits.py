"""The circuit page and the digit map in Chromium: they draw, their numbers are the direct computation's, and one
click on an incoming unit walks to that unit's circuit."""
import numpy as np
import pytest

from tests.conftest import assert_no_dash_errors, wait_drawn
from tests.test_circuits import reference

pytestmark = pytest.mark.browser


def shown(page, container: str) -> dict[int, float]:
    """{unit: contribution} as the tiles under #container show them (their data-value, full precision)."""
    tiles = page.locator(f"#{container} > a")
    return {int(tiles.nth(i).get_attribute("id").rsplit("-", 1)[1]):
            float(tiles.nth(i).locator(".circuit-contribution").get_attribute("data-value"))
            for i in range(tiles.count())}


def test_the_circuit_page_shows_exact_contributions_and_walks_to_an_incoming_unit(page, trained_store, dashboard_url):
    rid = trained_store.run_ids["relu"]
    w, _, means, _, last = reference(trained_store.tracking_uri, rid)
    unit = 3
    page.goto(f"{dashboard_url}/runs/{rid}/neurons/circuit?layer=2&unit={unit}&epoch={last}")
    wait_drawn(page, ["circuit-in-graph", "circuit-out-graph"])
    incoming, outgoing = shown(page, "circuit-in"), shown(page, "circuit-out")
    direct_in, direct_out = w[1][unit] * means[0], w[2][:, unit] * means[1][unit]
    assert len(incoming) == 8 and len(outgoing) == 8
    np.testing.assert_allclose(list(incoming.values()), direct_in[list(incoming)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(list(outgoing.values()), direct_out[list(outgoing)], rtol=1e-5, atol=1e-6)
    bars = page.evaluate("() => document.querySelector('#circuit-in-graph .js-plotly-plot').data[0].x")
    np.testing.assert_allclose(sorted(bars), sorted(incoming.values()), rtol=1e-9)  # the bars are the tiles' numbers
    first = next(iter(incoming))  # the strongest incoming unit
    page.click(f"#circuit-in-{first}")
    page.wait_for_url(f"**/neurons/circuit?layer=1&unit={first}&epoch={last}")
    page.wait_for_selector("#circuit-in-none")
    wait_drawn(page, ["circuit-out-graph"])
    assert f"Circuit · unit {first} · layer 1" in page.inner_text("h2")
    assert_no_dash_errors(page)


def test_the_digit_map_draws_and_its_digit_selector_walks(page, trained_store, dashboard_url):
    rid = trained_store.run_ids["sigmoid"]
    w, b, means, out, last = reference(trained_store.tracking_uri, rid)
    page.goto(f"{dashboard_url}/runs/{rid}/neurons/digits?digit=3")
    wait_drawn(page, ["digits-up-graph", "digits-down-graph"])
    up = shown(page, "digits-up")
    np.testing.assert_allclose(list(up.values()), (w[-1][3] * means[-1])[list(up)], rtol=1e-5, atol=1e-6)
    assert f"= {out[3]:+.3g}" in page.inner_text("#digits-line")
    page.click("#digits-pick-7")
    page.wait_for_url("**/neurons/digits?digit=7*")
    page.wait_for_selector("text=Digit map · 7")
    assert_no_dash_errors(page)


def test_conv_runs_say_why_they_have_no_circuit(page, trained_store, dashboard_url):
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids['cnn']}/neurons/circuit?layer=1&unit=0")
    page.wait_for_selector("text=circuits join dense layers only")
    assert_no_dash_errors(page)


def test_each_neuron_address_resolves_to_its_own_page(page, trained_store, dashboard_url):
    """The unit page's /neurons/<layer>/<unit> and the layer map's /neurons/map still win their addresses beside
    /neurons/circuit and /neurons/digits (Dash matches path templates in `order`)."""
    rid = trained_store.run_ids["relu"]
    for path, title in (("/neurons/2/3", "Unit 3 · layer 2"), ("/neurons/map?layer=1", "Layer map · layer 1"),
                        ("/neurons/circuit?layer=2&unit=3", "Circuit · unit 3 · layer 2"),
                        ("/neurons/digits?digit=4", "Digit map · 4"), ("/neurons?layer=1", "Neurons · ")):
        page.console_errors.clear()
        page.goto(f"{dashboard_url}/runs/{rid}{path}")
        page.wait_for_selector("h2")
        page.wait_for_load_state("networkidle")
        assert page.inner_text("h2").startswith(title), (path, page.inner_text("h2"))
        if "circuit" in path or "digits" in path:  # the other pages' own callbacks are their own tests' business
            assert_no_dash_errors(page)
