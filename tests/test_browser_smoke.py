"""The dashboard serves its pages in a real browser with no console errors."""
import pytest

from tests.conftest import assert_no_dash_errors

pytestmark = pytest.mark.browser


def test_runs_page_lists_the_runs_in_the_store(page, dashboard_url, trained_store):
    page.goto(dashboard_url + "/")
    page.wait_for_selector(".ag-row .run-link", timeout=20000)
    page.wait_for_timeout(500)
    assert_no_dash_errors(page)
