"""The ablation page, the layer page's ablation sort and the unit page's bar in real headless Chromium, over
real short-trained runs, against plain evaluations with one unit switched off (tests/test_ablation.py)."""
import numpy as np
import pytest

from tests.conftest import assert_no_dash_errors, wait_drawn
from tests.test_ablation import assert_counts_equal, last_snapshot, mnist_test, plain_correct

pytestmark = pytest.mark.browser
TIMEOUT = 60000
CURVES_TIMEOUT = 300000  # a CNN layer removed in 12 orders: hundreds of variants of the layers above
HEATMAP = "document.querySelector('#ablation-heatmap .js-plotly-plot').data[0]"


@pytest.fixture(scope="module")
def test_set():
    return mnist_test()


def plain_table(trained_store, test_set, name: str, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right answers per digit intact and with each unit of hidden layer `layer` (1-based) off, and the number
    of test images of each digit: one whole evaluation per unit."""
    x, labels = test_set
    config, snap = last_snapshot(trained_store.tracking_uri, trained_store.run_ids[name])
    base = plain_correct(config, snap, x, labels, layer - 1, [])
    units = config.sizes[layer] if config.arch == "mlp" else (16, 32)[layer - 1]
    table = np.array([plain_correct(config, snap, x, labels, layer - 1, [u]) for u in range(units)])
    return base, table, np.bincount(labels, minlength=10)


# The CNN at conv2: a conv layer whose cumulative curves run only the dense layers above it per variant (conv1's
# would rerun conv2 for each of 192 variants, over a minute of CI).
@pytest.mark.parametrize("name, layer", [("relu", 1), ("cnn", 2)])
def test_the_heatmap_holds_each_units_drop_per_digit_of_a_plain_evaluation(page, dashboard_url, trained_store,
                                                                          test_set, name, layer):
    base, table, images = plain_table(trained_store, test_set, name, layer)
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids[name]}/neurons/ablation?layer={layer}")
    wait_drawn(page, ["ablation-heatmap", "ablation-curves"], CURVES_TIMEOUT)
    shown = page.evaluate(f"(() => {{ const d = {HEATMAP}; return {{z: d.z, units: d.customdata.map(r => r[0])}}; }})()")
    units, z = shown["units"], np.array(shown["z"], dtype=float)
    assert sorted(units) == list(range(len(table)))
    drop = 100.0 * (base - table) / images  # the plain evaluations' drop, in points
    counts = base - np.round(z * images / 100.0).astype(int)  # the right answers the page's numbers stand for
    assert np.allclose(z, 100.0 * (base - counts) / images, rtol=0, atol=1e-9)  # whole images, nothing rounded
    assert_counts_equal(counts, table[units])
    overall = (base.sum() - table.sum(1))[units]  # rows sorted by total drop, largest first (within one image)
    assert all(a >= b - 2 for a, b in zip(overall, overall[1:])), overall
    assert np.abs(z - drop[units]).max() <= 100.0 / images.min() + 1e-9
    lines = page.evaluate("document.querySelector('#ablation-curves .js-plotly-plot').data.length")
    assert lines == 4 and page.locator("#ablation-answer").text_content().startswith(("Yes", "No"))
    critical = int(np.sum((base.sum() - table.sum(1)) * 100 >= images.sum()))
    assert page.locator("#ablation-critical").text_content().startswith(f"{critical} of {len(table)} units")
    page.locator("#ablation-sort").click()
    page.get_by_text("unit index", exact=True).click()
    page.wait_for_function(f"{HEATMAP}.customdata[0][0] === 0 && {HEATMAP}.customdata[1][0] === 1", timeout=TIMEOUT)
    assert_no_dash_errors(page)


def test_the_unit_page_bars_and_says_what_switching_the_unit_off_costs(page, dashboard_url, trained_store, test_set):
    base, table, images = plain_table(trained_store, test_set, "sigmoid", 1)
    unit = int(np.argmax(base.sum() - table.sum(1)))  # the unit that matters most
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids['sigmoid']}/neurons/1/{unit}")
    wait_drawn(page, ["unit-ablation-bar"], TIMEOUT)
    bars = np.array(page.evaluate("document.querySelector('#unit-ablation-bar .js-plotly-plot').data[0].y"), float)
    counts = base - np.round(bars * images / 100.0).astype(int)
    assert_counts_equal(counts[None], table[unit][None])
    worst = int(np.argmax(bars))
    line = page.locator("#unit-ablation-line").text_content()
    assert line.startswith(f"Switching it off costs {bars[worst]:.1f} points on {worst}s"), line
    assert_no_dash_errors(page)


def test_the_layer_page_sorts_its_tiles_by_ablation_drop_and_links_the_ablation_page(page, dashboard_url,
                                                                                      trained_store, test_set):
    base, table, _ = plain_table(trained_store, test_set, "relu", 2)
    rid = trained_store.run_ids["relu"]
    page.goto(f"{dashboard_url}/runs/{rid}/neurons?layer=2&sort=ablation")
    page.wait_for_selector(".neurons-tile-drop", timeout=TIMEOUT)
    hrefs = page.eval_on_selector_all("#neurons-tiles a.neurons-tile", "els => els.map(e => e.getAttribute('href'))")
    shown = [int(h.split("?")[0].rsplit("/", 1)[1]) for h in hrefs]
    lost = base.sum() - table.sum(1)
    assert sorted(shown) == list(range(len(table)))
    assert all(lost[a] >= lost[b] - 1 for a, b in zip(shown, shown[1:])), (shown, lost)
    assert "/neurons/ablation?layer=2" in page.get_attribute("#neurons-ablation-link", "href")
    assert_no_dash_errors(page)
