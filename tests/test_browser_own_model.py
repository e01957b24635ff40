"""Runs from the user's own loop, with their model logged as data, in real Chromium on a real server: for both
examples and the residual model of issue 28, the unit page shows a feature visualisation, the image page
integrated gradients complete within 2 %, and the run page the loss landscape."""
import re

import pytest

from dashboard.loaders import deep_neurons as D
from dashboard.loaders.neuron_target import resolve
from tests.conftest import assert_no_dash_errors, served
from tests.test_own_model_graph import MODELS, trained_models

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WAIT = 90_000
IMAGE = 3  # a test image (a 0)
GAP = re.compile(r"completeness gap ([0-9.]+)%")


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    uri, runs = trained_models(tmp_path_factory)
    log_path = tmp_path_factory.mktemp("own-model-dashboard") / "server.log"
    with served(["-m", "dashboard", "--port", "{port}"], log_path, env={"MLFLOW_TRACKING_URI": uri},
                timeout=180) as server:
        yield server.url, uri, {name: rid for name, (rid, _) in runs.items()}
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.fixture
def site(own_server, monkeypatch):
    """(server url, {model: run id}), with this process reading the same store for the expected values."""
    url, uri, ids = own_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return url, ids


@pytest.mark.parametrize("name", list(MODELS))
def test_the_unit_page_of_an_own_run_shows_what_the_unit_wants(page, site, name):
    url, ids = site
    t = resolve(ids[name], 1, None, 2)
    page.goto(f"{url}/runs/{t.run_id}/neurons/1/2")
    page.wait_for_selector("#unit-fv[src^='data:image/png;base64,']", timeout=WAIT)
    assert f"{D.feature_vis(t, 2).objective:.2f}" in page.inner_text("#unit-fv-value")
    assert_no_dash_errors(page)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_image_page_of_an_own_run_shows_integrated_gradients_within_2_percent(page, site, name):
    url, ids = site
    page.goto(f"{url}/runs/{ids[name]}/images/{IMAGE}")
    page.wait_for_selector("#image-attr-predicted", timeout=WAIT)
    captions = page.locator("#image-attr figcaption, figure figcaption").all_inner_texts()
    gaps = [float(m.group(1)) for c in captions if (m := GAP.search(c))]
    assert gaps and all(g < 2.0 for g in gaps), captions
    assert page.locator(".image-unit").count() == sum(s.units for s in resolve(ids[name]).specs[:-1])
    assert_no_dash_errors(page)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_run_page_of_an_own_run_shows_the_loss_landscape(page, site, name):
    url, ids = site
    page.goto(f"{url}/runs/{ids[name]}")
    page.wait_for_selector("#run-landscape-button", timeout=WAIT)
    page.click("#run-landscape-button")
    page.wait_for_selector("#run-landscape-contour .main-svg", timeout=WAIT)
    assert page.locator("#run-landscape-contour .contour").count() >= 1
    assert "Cannot compute" not in page.inner_text("#run-landscape")
    assert_no_dash_errors(page)
