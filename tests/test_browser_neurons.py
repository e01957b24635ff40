"""The neuron explorer in real Chromium over the real trained store: tiles, unit pages, scrubbing, names."""
import re

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import resolve
from dashboard.views.neurons.unit_report import summary_sentence
from tests.conftest import assert_no_dash_errors, served
from tests.test_neurons_real import reference_matching
from training import contract as C

pytestmark = pytest.mark.browser


@pytest.fixture
def from_store(trained_store, monkeypatch):
    """What the pages should show, computed in this process from the same store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)


HEATMAP_DATA = "JSON.stringify(document.querySelector('#unit-weights .js-plotly-plot').data[0].z)"


def open_unit(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#unit-weights .main-svg", timeout=30000)


def test_layer_view_shows_a_tile_for_every_unit_with_verdict_and_si(page, dashboard_url, trained_store, from_store):
    rid = trained_store.run_ids["sigmoid"]
    stats = S.layer_stats(resolve(rid, 1))
    page.goto(f"{dashboard_url}/runs/{rid}/neurons?layer=1&sort=si")
    page.wait_for_selector(".neurons-tile", timeout=30000)
    tiles = page.locator(".neurons-tile")
    assert tiles.count() == 20
    assert page.locator(".neurons-tile img").count() == 20
    order = sorted(range(20), key=lambda u: (-stats.si[u], u))  # highest SI first, ties by index
    assert [t.split()[0] for t in tiles.all_inner_texts()] == [f"#{u}" for u in order]
    assert page.locator(".neurons-tile-verdict").all_inner_texts() == [stats.verdicts[u] for u in order]
    assert page.locator(".neurons-tile-si").all_inner_texts() == [f"SI {stats.si[u]:.2f}" for u in order]
    first_tile = "document.querySelector('.neurons-tile img').src"
    trained = page.evaluate(first_tile)
    page.locator("#neurons-epoch [role=slider]").focus()
    page.keyboard.press("Home")  # the untrained net: other weights, other tiles
    page.wait_for_function(f"{first_tile} !== {trained!r}", timeout=15000)
    assert "epoch=0" in page.locator(".neurons-tile").first.get_attribute("href")
    page.wait_for_url(re.compile(r"layer=1&sort=si&epoch=0$"), timeout=5000)  # a copied link opens this view
    tiles.first.click()
    page.wait_for_selector("#unit-weights .main-svg", timeout=30000)
    assert f"/runs/{rid}/neurons/1/" in page.url
    assert_no_dash_errors(page)


def test_unit_view_shows_heatmap_top_8_per_class_distribution_si_and_verdict(page, dashboard_url, trained_store,
                                                                             from_store):
    rid = trained_store.run_ids["sigmoid"]
    t = resolve(rid, 1, None, 4)
    stats, (_, labels) = S.layer_stats(t), S.test_images()
    open_unit(page, f"{dashboard_url}/runs/{rid}/neurons/1/4")
    assert page.evaluate("document.querySelector('#unit-weights .js-plotly-plot').data[0].type") == "heatmap"
    z = page.evaluate("Array.from(document.querySelector('#unit-weights .js-plotly-plot')._fullData[0].z, "
                      "row => Array.from(row))")
    np.testing.assert_allclose(z, S.weights(t)[4].reshape(28, 28), atol=1e-6)  # the unit's own weights
    assert page.locator("#unit-top img").count() == 8
    captions = page.locator("#unit-top figcaption").all_inner_texts()
    assert captions == [f"{labels[i]} · {stats.acts[i, 4]:.3f}" for i in stats.top[4]]
    assert page.evaluate("document.querySelector('#unit-per-class .js-plotly-plot').data.length") == 10
    summary = page.locator("#unit-summary").inner_text()
    assert summary == summary_sentence(t, stats, 4, labels)
    assert f"SI = {stats.si[4]:.2f}" in summary and f"NMI = {stats.nmi[4]:.2f}" in summary
    page.locator("#unit-show-bottom input").check()
    page.wait_for_function("getComputedStyle(document.querySelector('#unit-bottom')).display === 'flex'")
    assert page.locator("#unit-bottom img").count() == 8
    with page.expect_download() as download:
        page.click("#unit-report-button")
    report = open(download.value.path(), encoding="utf-8").read()
    assert "Unit 4 of layer 1" in report and report.count("<img") == 2 + 8
    assert_no_dash_errors(page)


def test_moving_the_epoch_changes_the_heatmap_and_play_runs_to_the_last_epoch(page, dashboard_url, trained_store):
    rid = trained_store.run_ids["sigmoid"]
    open_unit(page, f"{dashboard_url}/runs/{rid}/neurons/1/2")
    last = page.evaluate(HEATMAP_DATA)
    thumb = page.locator("#unit-epoch [role=slider]")
    assert thumb.get_attribute("aria-valuenow") == "2"
    thumb.focus()
    page.keyboard.press("Home")
    page.wait_for_function(f"{HEATMAP_DATA} !== {last!r}", timeout=15000)
    untrained = page.evaluate(HEATMAP_DATA)
    page.wait_for_url(re.compile(r"/neurons/1/2\?epoch=0$"), timeout=5000)
    history = page.evaluate("history.length")
    page.click("#unit-play")
    page.wait_for_function(f"{HEATMAP_DATA} === {last!r}", timeout=15000)
    assert thumb.get_attribute("aria-valuenow") == "2"
    page.wait_for_function("document.querySelector('#unit-play').innerText.includes('Play')", timeout=5000)
    assert untrained != last
    page.wait_for_url(re.compile(r"\?epoch=2$"), timeout=5000)
    assert page.evaluate("history.length") == history  # playing leaves no trail in Back
    page.reload()  # the address alone brings the unit back at that epoch
    page.wait_for_selector("#unit-weights .main-svg", timeout=30000)
    assert page.evaluate(HEATMAP_DATA) == last
    assert_no_dash_errors(page)


@pytest.fixture
def writable_dashboard(trained_store_copy, tmp_path):
    """A dashboard of its own over a private copy of the trained store: saving a name writes to the store,
    and the session's store must stay as built."""
    with served(["-m", "dashboard", "--port", "{port}"], tmp_path / "server.log",
                env={"MLFLOW_TRACKING_URI": trained_store_copy.tracking_uri}) as server:
        yield server.url


def test_a_name_set_in_the_page_is_a_run_tag_and_shows_as_text_in_the_layer_view(page, writable_dashboard,
                                                                                 trained_store_copy, trained_store):
    dashboard_url, rid = writable_dashboard, trained_store_copy.run_ids["sigmoid"]
    hostile = "<img src=x onerror=window.__pwned=1>"
    open_unit(page, f"{dashboard_url}/runs/{rid}/neurons/1/7")
    page.fill("#unit-name", hostile)
    page.fill("#unit-note", "fires on the left half of a 0")
    page.click("#unit-save")
    page.wait_for_function("document.querySelector('#unit-save-status').innerText.startsWith('Saved')")
    tags = MlflowClient(trained_store_copy.tracking_uri).get_run(rid).data.tags
    assert C.neuron_name_tag(1, 7) not in MlflowClient(trained_store.tracking_uri).get_run(rid).data.tags
    assert tags[C.neuron_name_tag(1, 7)] == hostile
    assert tags[C.neuron_note_tag(1, 7)] == "fires on the left half of a 0"
    page.goto(f"{dashboard_url}/runs/{rid}/neurons?layer=1")
    page.wait_for_selector(".neurons-tile", timeout=30000)
    tile = page.locator(".neurons-tile").nth(7)
    assert tile.locator(".neurons-tile-name").inner_text() == hostile
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert_no_dash_errors(page)


def test_a_unit_opened_with_another_run_shows_its_best_match_and_correlation(page, dashboard_url, trained_store,
                                                                            from_store):
    rid, other = trained_store.run_ids["sigmoid"], trained_store.run_ids["sigmoid_b"]
    a, b = S.layer_stats(resolve(rid, 1)).acts, S.layer_stats(resolve(other, 1)).acts
    expected_match, expected_corr = reference_matching(a, b)
    open_unit(page, f"{dashboard_url}/runs/{rid}/neurons/1/3?compare={other}")
    assert page.locator("#unit-compare-corr").inner_text() == f"r = {expected_corr[3]:.2f}"
    assert f": unit {expected_match[3]}, correlation" in page.locator("#unit-compare").inner_text()
    assert page.locator("#unit-compare .js-plotly-plot").count() == 2  # both heatmaps
    assert "one-to-one" in page.locator("#unit-compare").inner_text()
    open_unit(page, f"{dashboard_url}/runs/{rid}/neurons/1/3?compare={trained_store.run_ids['cnn']}")
    assert "Cannot compare" in page.locator("#unit-compare .message-error").inner_text()
    assert_no_dash_errors(page)


def test_a_cnns_first_conv_layer_shows_channels_as_units_with_3x3_kernels(page, dashboard_url, trained_store):
    rid = trained_store.run_ids["cnn"]
    page.goto(f"{dashboard_url}/runs/{rid}/neurons?layer=1")
    page.wait_for_selector(".neurons-tile", timeout=30000)
    assert page.locator(".neurons-tile").count() == 16
    open_unit(page, f"{dashboard_url}/runs/{rid}/neurons/1/5")
    kernel = "document.querySelector('#unit-weights .js-plotly-plot')._fullData[0].z"
    assert page.evaluate(f"[{kernel}.length, {kernel}[0].length]") == [3, 3]
    assert page.locator("#unit-top img").count() == 8
    assert_no_dash_errors(page)


def test_bad_addresses_show_a_message_not_an_error(page, dashboard_url, trained_store):
    ids = trained_store.run_ids
    cases = {
        f"/runs/{'0' * 32}/neurons": "is not in the store",
        f"/runs/{ids['sigmoid']}/neurons?layer=7": "layer 7 does not exist",
        f"/runs/{ids['sigmoid']}/neurons?layer=x": "is not a whole number",
        f"/runs/{ids['sigmoid']}/neurons?epoch=99": "epoch 99 has no snapshot",
        f"/runs/{ids['foreign']}/neurons": "not logged by MNIST Lab's trainer",
        f"/runs/{ids['sigmoid']}/neurons/1/20": "unit 20 does not exist",
        f"/runs/{ids['sigmoid']}/neurons/3/0": "layer 3 does not exist",
        f"/runs/{ids['sigmoid']}/neurons/1/abc": "unit 'abc' is not a whole number",
    }
    for path, message in cases.items():
        page.goto(dashboard_url + path)
        page.wait_for_selector(".message-error", timeout=15000)
        assert message in page.locator(".message-error").inner_text(), path
    assert_no_dash_errors(page)


def test_the_run_page_and_the_neuron_pages_resolve_to_their_own_layouts(page, dashboard_url, trained_store):
    rid = trained_store.run_ids["relu"]
    page.goto(f"{dashboard_url}/runs/{rid}/neurons/2/3")
    page.wait_for_selector("#unit-weights .main-svg", timeout=30000)
    page.goto(f"{dashboard_url}/runs/{rid}/neurons?layer=2")
    page.wait_for_selector(".neurons-tile", timeout=30000)
    assert page.locator(".neurons-tile").count() == 16
    page.goto(f"{dashboard_url}/runs/{rid}")
    page.wait_for_timeout(1500)
    assert page.locator("#unit-target, #neurons-target").count() == 0
    assert page.locator("h2").count() >= 1
    assert_no_dash_errors(page)
