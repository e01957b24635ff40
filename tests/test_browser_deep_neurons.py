"""The deeper neuron views in real Chromium over the trained store: unit page with feature visualisation and
emergence, layer page, layer map, image page and similarity, for an MLP run and the CNN run."""
import re

import numpy as np
import pytest

from dashboard.loaders import deep_neurons as D
from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import resolve
from tests.conftest import assert_no_dash_errors

pytestmark = pytest.mark.browser
WAIT = 60000
RUNS = ["sigmoid", "cnn"]


@pytest.fixture
def ids(trained_store, monkeypatch):
    """What the pages should show, computed in this process from the same store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    return trained_store.run_ids


def plot_data(page, graph_id: str) -> list:
    """Each trace's name, x, y, z and customdata as drawn (Plotly's decoded _fullData, as plain lists)."""
    return page.evaluate(
        f"document.querySelector('#{graph_id} .js-plotly-plot')._fullData.map(t => ({{name: t.name, "
        "x: t.x ? Array.from(t.x) : null, y: t.y ? Array.from(t.y) : null, "
        "z: t.z ? Array.from(t.z, r => Array.from(r)) : null, "
        "customdata: t.customdata ? Array.from(t.customdata) : null}))")


@pytest.mark.parametrize("run, layer", [("sigmoid", 1), ("cnn", 2)])
def test_unit_page_shows_what_it_wants_and_when_it_appeared(page, dashboard_url, ids, run, layer):
    t = resolve(ids[run], layer, None, 3)
    e = D.emergence(t)
    page.goto(f"{dashboard_url}/runs/{t.run_id}/neurons/{layer}/3")
    page.wait_for_selector("#unit-emergence .main-svg", timeout=WAIT)
    assert page.get_attribute("#unit-fv", "src").startswith("data:image/png;base64,")
    vis = D.feature_vis(t, 3)
    assert f"{vis.objective:.2f}" in page.inner_text("#unit-fv-value")
    line = page.inner_text("#unit-emergence-line")
    assert (f"epoch {e.emergence[3]}" in line) if e.emergence[3] is not None else line.startswith("Never")
    rows = page.locator("#unit-emergence-table tbody tr").all_inner_texts()
    assert [r.split()[0] for r in rows] == [str(ep) for ep in t.epochs]
    assert plot_data(page, "unit-emergence")[0]["y"] == pytest.approx(list(e.si[:, 3]), abs=1e-6)
    page.locator("#unit-top a").first.click()  # a top image opens its image page
    page.wait_for_selector("#image-digit", timeout=WAIT)
    assert re.search(rf"/runs/{t.run_id}/images/{S.layer_stats(t).top[3][0]}\?epoch={t.epoch}$", page.url)
    assert_no_dash_errors(page)


def test_layer_page_sorts_by_emergence_charts_verdicts_and_shows_feature_visualisations(page, dashboard_url, ids):
    t = resolve(ids["sigmoid"], 1)
    e = D.emergence(t)
    page.goto(f"{dashboard_url}/runs/{t.run_id}/neurons?layer=1&sort=emergence")
    page.wait_for_selector("#neurons-counts .main-svg", timeout=WAIT)
    order = sorted(range(t.units), key=lambda u: (e.emergence[u] is None, e.emergence[u] or 0, u))
    assert [x.split()[0] for x in page.locator(".neurons-tile").all_inner_texts()] == [f"#{u}" for u in order]
    counts = plot_data(page, "neurons-counts-graph")
    assert [c["y"] for c in counts] == [list(e.counts[k]) for k in ("class", "feature", "dead")]
    before = page.get_attribute(".neurons-tile img", "src")
    page.click("#neurons-show")
    page.get_by_text("what each unit wants (feature visualisation)").click()
    page.wait_for_function(f"document.querySelector('.neurons-tile img').src !== {before!r}", timeout=WAIT)
    page.wait_for_url(re.compile(r"show=fv"), timeout=5000)
    assert page.get_attribute("#neurons-similarity-link", "href").startswith(f"/similarity?runs={t.run_id}")
    assert_no_dash_errors(page)


@pytest.mark.parametrize("run", RUNS)
def test_layer_map_colours_the_10000_images_by_digit_hover_shows_one_click_opens_it(page, dashboard_url, ids, run):
    t = resolve(ids[run], 1)
    xy, _ = D.layer_map(t, "pca")
    _, labels = S.test_images()
    page.goto(f"{dashboard_url}/runs/{t.run_id}/neurons/map?layer=1")
    page.wait_for_selector("#map-graph .main-svg", timeout=WAIT)
    data = plot_data(page, "map-graph")
    assert [d["name"] for d in data] == [str(d) for d in range(10)]
    assert sum(len(d["x"]) for d in data) == 10000
    sevens = data[7]
    i = sevens["customdata"][0]
    assert labels[i] == 7 and sevens["x"][0] == pytest.approx(float(xy[i, 0]), abs=1e-3)
    page.evaluate("(i) => { const g = document.querySelector('#map-graph .js-plotly-plot');"
                  "g.emit('plotly_hover', {points: [{customdata: i, curveNumber: 7, pointNumber: 0}]}); }", i)
    page.wait_for_selector("#map-hover-img", timeout=WAIT)
    assert f"#{i} · digit 7" in page.inner_text("#map-hover")
    page.evaluate("(i) => { const g = document.querySelector('#map-graph .js-plotly-plot');"
                  "g.emit('plotly_click', {points: [{customdata: i, curveNumber: 7, pointNumber: 0}]}); }", i)
    page.wait_for_selector("#image-digit", timeout=WAIT)
    assert f"/runs/{t.run_id}/images/{i}?epoch={t.epoch}" in page.url
    assert_no_dash_errors(page)


@pytest.mark.parametrize("run", RUNS)
def test_image_page_shows_the_outputs_every_hidden_unit_and_attributions(page, dashboard_url, ids, run):
    t = resolve(ids[run], 1)
    d = D.one_image_data(t, 8)
    page.goto(f"{dashboard_url}/runs/{t.run_id}/images/8?epoch={t.epoch}")
    page.wait_for_selector("#image-probs .main-svg", timeout=WAIT)
    assert plot_data(page, "image-probs")[0]["y"] == pytest.approx(list(d.probs), abs=1e-6)
    pred = int(np.argmax(d.probs))
    assert page.inner_text("#image-verdict").startswith(f"true digit {d.label} · predicted {pred}")
    page.wait_for_selector("#image-attr-predicted", timeout=WAIT)  # filled after the first paint
    assert page.locator("#image-attr-true").count() == (pred != d.label)
    assert page.locator(".image-layer").count() == len(d.acts)
    assert page.locator(".image-unit").count() == sum(len(a) for a in d.acts)
    page.locator(".image-unit").first.click()
    page.wait_for_selector("#unit-weights .main-svg", timeout=WAIT)
    assert f"/runs/{t.run_id}/neurons/1/{int(np.argmax(d.acts[0]))}" in page.url
    assert_no_dash_errors(page)


def test_similarity_across_three_runs_and_across_epochs(page, dashboard_url, ids):
    runs = [ids["sigmoid"], ids["sigmoid_b"], ids["relu"]]
    ts = [resolve(r, 1) for r in runs]
    m = D.runs_similarity(tuple(ts))
    page.goto(f"{dashboard_url}/similarity?runs={','.join(runs)}&layer=1&run={runs[1]}")
    page.wait_for_selector("#similarity-epochs .main-svg", timeout=WAIT)
    np.testing.assert_allclose(plot_data(page, "similarity-runs")[0]["z"], m, atol=1e-9)
    epochs = np.array(plot_data(page, "similarity-epochs")[0]["z"])
    np.testing.assert_allclose(epochs, D.epochs_similarity(ts[1]), atol=1e-9)
    assert epochs.shape == (len(ts[1].epochs),) * 2
    assert_no_dash_errors(page)


def test_similarity_of_the_cnn_across_epochs_and_the_compare_pages_link(page, dashboard_url, ids):
    cnn = ids["cnn"]
    page.goto(f"{dashboard_url}/compare?runs={ids['sigmoid']},{cnn}")
    page.wait_for_selector("#compare-similarity-link", timeout=WAIT)
    page.click("#compare-similarity-link")
    page.wait_for_selector("#similarity-runs .main-svg", timeout=WAIT)
    page.goto(f"{dashboard_url}/similarity?runs={cnn}&layer=2")
    page.wait_for_selector("#similarity-epochs .main-svg", timeout=WAIT)
    assert_no_dash_errors(page)


def test_the_run_pages_misclassified_gallery_opens_an_image_page(page, dashboard_url, ids):
    rid = ids["sigmoid"]
    page.goto(f"{dashboard_url}/runs/{rid}")
    link = page.locator(".run-gallery-link").first
    link.wait_for(timeout=WAIT)
    link.click()
    page.wait_for_selector("#image-probs .main-svg", timeout=WAIT)
    assert re.search(rf"/runs/{rid}/images/\d+\?epoch=\d+$", page.url)
    verdict = page.inner_text("#image-verdict")  # "true digit 3 · predicted 2 (97.0%)": a mistake
    assert verdict.split(" · ")[0].split()[-1] != verdict.split(" · ")[1].split()[1]
    assert_no_dash_errors(page)
