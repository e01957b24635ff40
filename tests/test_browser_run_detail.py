"""The run detail page in real headless Chromium, over a store of real short training runs."""
import re

import pytest

from tests.conftest import assert_no_dash_errors, wait_drawn

pytestmark = pytest.mark.browser
TIMEOUT = 30000
FIGURE_SECTIONS = ["run-progress", "run-architecture", "run-gradients", "run-dead", "run-weights",
                   "run-activations", "run-confidence", "run-confusion", "run-gallery", "run-samples"]


def wait_loaded(page, sections: list[str]) -> None:
    wait_drawn(page, sections, TIMEOUT)


def confidence_epoch(page) -> str:
    return page.locator("#run-confidence-graph .xtitle").text_content()


@pytest.mark.parametrize("kind", ["sigmoid", "relu", "cnn"])
def test_every_section_of_a_contract_run_shows_a_figure(page, dashboard_url, trained_store, kind):
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids[kind]}")
    wait_loaded(page, FIGURE_SECTIONS)
    for section in FIGURE_SECTIONS:
        assert page.locator(f"#{section} .js-plotly-plot .main-svg").count() >= 1, section
        assert page.locator(f"#{section} .js-plotly-plot .plot-container .trace, "
                            f"#{section} .js-plotly-plot .hm, #{section} .js-plotly-plot .layer-above path, "
                            f"#{section} .js-plotly-plot .shapelayer path").count() >= 1, f"{section} is empty"
    assert page.locator("#run-health li, #run-health-ok").count() >= 1
    assert page.get_attribute("#run-neurons-link", "href").endswith("/neurons?layer=1")
    assert page.get_attribute("#run-compare-link", "href") == f"/compare?runs={trained_store.run_ids[kind]}"
    assert_no_dash_errors(page)


def test_the_epoch_slider_writes_the_url_and_back_and_reload_restore_it(page, dashboard_url, trained_store):
    url = f"{dashboard_url}/runs/{trained_store.run_ids['sigmoid']}"
    page.goto(url)
    wait_loaded(page, FIGURE_SECTIONS)
    assert "epoch 2" in confidence_epoch(page)  # default: the last snapshot
    page.focus("#run-epoch .dash-slider-thumb")
    page.keyboard.press("Home")
    page.wait_for_url(re.compile(r"\?epoch=0$"), timeout=TIMEOUT)
    page.wait_for_function("document.querySelector('#run-confidence-graph .xtitle')?.textContent.includes('epoch 0')",
                           timeout=TIMEOUT)
    page.go_back()
    page.wait_for_url(url, timeout=TIMEOUT)
    page.wait_for_function("document.querySelector('#run-confidence-graph .xtitle')?.textContent.includes('epoch 2')",
                           timeout=TIMEOUT)
    assert page.get_attribute("#run-epoch .dash-slider-thumb", "aria-valuenow") == "2"
    page.go_forward()
    page.wait_for_function("document.querySelector('#run-confidence-graph .xtitle')?.textContent.includes('epoch 0')",
                           timeout=TIMEOUT)
    page.goto(url + "?epoch=1")  # a bookmarked epoch
    wait_loaded(page, FIGURE_SECTIONS)
    assert "epoch 1" in confidence_epoch(page)
    assert page.get_attribute("#run-epoch .dash-slider-thumb", "aria-valuenow") == "1"
    assert_no_dash_errors(page)


def test_the_loss_landscape_is_computed_on_demand(page, dashboard_url, trained_store):
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids['sigmoid_b']}")
    page.wait_for_selector("#run-landscape-button", timeout=TIMEOUT)
    page.click("#run-landscape-button")
    page.wait_for_selector("#run-landscape-contour .main-svg", timeout=60000)
    page.wait_for_selector("#run-landscape-surface .main-svg", timeout=TIMEOUT)
    assert page.locator("#run-landscape-contour .contour").count() >= 1
    page.reload()  # a finished run's landscape is kept: a later visit shows it without the button
    page.wait_for_selector("#run-landscape-contour .main-svg", timeout=TIMEOUT)
    assert page.inner_text("#run-landscape-button") == "Computed ✓"
    assert_no_dash_errors(page)


def test_a_foreign_run_shows_what_exists_and_says_what_is_missing(page, dashboard_url, trained_store):
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids['foreign']}")
    page.wait_for_selector("#run-progress-graph .main-svg", timeout=TIMEOUT)  # its one metric, "accuracy"
    page.wait_for_function("!document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=TIMEOUT)
    text = page.inner_text("body")
    assert "lacks parts of the tracking contract" in text and "snapshot artifacts" in text
    assert "accuracy" in page.inner_text("#run-progress")
    assert "not a run of MNIST Lab's trainer" in page.inner_text("#run-architecture")  # RunConfig.from_params
    assert_no_dash_errors(page)


@pytest.mark.parametrize("path, message", [
    ("/runs/not-a-run", "is not a run id"),
    ("/runs/" + "0" * 32, "is not in the store"),
])
def test_a_bad_run_id_is_a_message_not_an_error(page, dashboard_url, path, message):
    page.goto(dashboard_url + path)
    page.wait_for_selector(".message-error", timeout=TIMEOUT)
    assert message in page.inner_text(".message-error")
    assert_no_dash_errors(page)


def test_an_epoch_without_a_snapshot_is_explained(page, dashboard_url, trained_store):
    page.goto(f"{dashboard_url}/runs/{trained_store.run_ids['relu']}?epoch=99")
    wait_loaded(page, FIGURE_SECTIONS)
    assert "Epoch 99 has no snapshot" in page.inner_text("body")
    assert "epoch 2" in confidence_epoch(page)
    assert_no_dash_errors(page)
