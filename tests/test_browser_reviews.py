"""Reviews in real headless Chromium over a real dashboard (issue #30, "Done when"):

- a review made from the compare page, a unit page added to it, a narrative and a decision written: all there
  after a reload;
- its export opened from file:// with every request refused: every figure draws and no request leaves the page;
- two browsers editing one review: the stale save is refused with a message, and neither text is lost;
- markup typed into a title, a narrative and a comment is shown as text, never run;
- MLflow's own UI (a real `mlflow server`) shows the review with its narrative as the description.

The store is a copy of the session's trained store (that one must stay as built), served by a dashboard of its own.
"""
import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from dashboard.read import mlflow_links
from tests.conftest import assert_no_dash_errors, served, sqlite_uri, wait_drawn
from tests.test_accessibility import axe_script  # noqa: F401  (the pinned axe-core, a fixture)
from training import contract as C

pytestmark = pytest.mark.browser
TIMEOUT = 30000
NARRATIVE = ("# Verdict\n\nThe **sigmoid** net at lr 3.0 learns faster than at lr 1.0.\n\n"
             "- test accuracy higher after 2 epochs\n- <script>window.__xss = 1</script> stays text")
ANN = "Ann's narrative, saved first.\n\n- the **lr 3.0** run is adopted"
XSS_COMMENT = '<img src=x onerror="window.__xss = 2">'


@pytest.fixture(scope="module")
def site(trained_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("reviews-browser")
    db = Path(trained_store.tracking_uri.split("sqlite:///", 1)[1].split("?", 1)[0])
    shutil.copy(db, root / "mlflow.db")
    uri = sqlite_uri(root)
    with served(["-m", "dashboard", "--port", "{port}"], root / "server.log", env={"MLFLOW_TRACKING_URI": uri}) as s:
        yield SimpleNamespace(url=s.url, uri=uri, ids=trained_store.run_ids, root=root)


def settle(page):
    page.wait_for_function("!document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=TIMEOUT)


def add_to_review(page, prefix: str, review_title: str, new: bool) -> str:
    """Press "Add to review" on the page shown; returns the review's address the control links to."""
    page.click(f"#{prefix}-review-open")
    page.wait_for_selector(f"#{prefix}-review-go", state="visible", timeout=TIMEOUT)
    if new:
        page.fill(f"#{prefix}-review-title", review_title)
    else:
        page.click(f"#{prefix}-review-target")
        page.get_by_role("option", name=review_title).click()
    page.click(f"#{prefix}-review-go")
    link = page.locator(f"#{prefix}-review-link")
    link.wait_for(timeout=TIMEOUT)
    return link.get_attribute("href")


def open_review(page, site, href):
    page.goto(site.url + href)
    page.wait_for_selector("#review-narrative", timeout=TIMEOUT)
    settle(page)


def save_edits(page, narrative=None, decision=None, reasons=None, author=None):
    for selector, value in (("#review-narrative", narrative), ("#review-decision", decision),
                            ("#review-reasons", reasons), ("#review-author", author)):
        if value is not None:
            page.fill(selector, value)
    page.click("#review-save")


@pytest.fixture(scope="module")
def made(site, browser):
    """The review the whole flow builds: from the compare page, then a unit page added to it.  Its address."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    s, b = site.ids["sigmoid"], site.ids["sigmoid_b"]
    page.goto(f"{site.url}/compare?runs={s},{b}&smooth=0.3")
    wait_drawn(page, ["compare-curve-test_acc"])
    href = add_to_review(page, "compare", "Which lr for <b>sigmoid</b>?", new=True)
    page.goto(f"{site.url}/runs/{s}/neurons/1/3?epoch=1")
    wait_drawn(page, ["unit-weights"])
    assert add_to_review(page, "unit", "Which lr for <b>sigmoid</b>?", new=False) == href
    context.close()
    return href


def test_a_review_made_from_the_compare_page_keeps_its_views_narrative_and_decision(page, site, made):
    s, b = site.ids["sigmoid"], site.ids["sigmoid_b"]
    open_review(page, site, made)
    save_edits(page, NARRATIVE, s, "higher test accuracy\nafter 2 epochs", "Ann")
    page.wait_for_function("document.querySelector('#review-save-status').textContent.startsWith('Saved version 2')",
                           timeout=TIMEOUT)
    page.reload()
    page.wait_for_selector("#review-narrative", timeout=TIMEOUT)
    settle(page)
    assert page.input_value("#review-narrative") == NARRATIVE
    assert page.input_value("#review-decision") == s
    assert page.input_value("#review-reasons") == "higher test accuracy\nafter 2 epochs"
    assert page.input_value("#review-author") == "Ann"  # kept in this browser
    assert page.inner_text("#review-heading") == "Which lr for <b>sigmoid</b>?"  # markup in a name: text
    shown = page.inner_text("#review-narrative-shown")
    assert "Verdict" in shown and "<script>window.__xss = 1</script> stays text" in shown
    assert page.locator("#review-narrative-shown strong").inner_text() == "sigmoid"
    frames = [page.locator("iframe.review-frame").nth(i).get_attribute("src") for i in range(2)]
    assert frames == [f"/compare?runs={s},{b}&smooth=0.3", f"/runs/{s}/neurons/1/3?epoch=1"]  # state and all
    assert page.locator("iframe.review-frame").count() == 2
    assert "By Ann" in page.inner_text("#review-meta") and "version 2" in page.inner_text("#review-meta")
    # The embedded views are the live pages: the unit's figure draws inside its frame.
    page.frame_locator("iframe.review-frame >> nth=1").locator("#unit-weights .main-svg").first.wait_for(timeout=TIMEOUT)
    page.fill("#review-comment-text", XSS_COMMENT)
    page.click("#review-comment-add")
    page.wait_for_selector(".review-comment", timeout=TIMEOUT)
    assert page.inner_text(".review-comment") == XSS_COMMENT
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert_no_dash_errors(page)


def test_the_export_opens_from_disk_with_every_figure_drawn_and_no_request_leaving(page, site, made, browser,
                                                                                  tmp_path):
    open_review(page, site, made)
    with page.expect_download(timeout=120000) as download:
        page.click("#review-export-button")
    path = tmp_path / "review.html"
    download.value.save_as(path)
    text = path.read_text()
    assert "Plotly" in text and "<script src" not in text

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    offline = context.new_page()
    left = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()
    context.route("**/*", only_files)
    offline.on("request", lambda r: left.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    errors = []
    offline.on("pageerror", lambda e: errors.append(str(e)))
    offline.goto(path.as_uri())
    placeholders = offline.locator(".review-figure").count()
    assert placeholders >= 3  # the compare page's curves and the unit's figures
    offline.wait_for_function("n => document.querySelectorAll('.review-figure .main-svg').length >= n",
                              arg=placeholders, timeout=TIMEOUT)
    drawn = offline.evaluate("[...document.querySelectorAll('.review-figure')].filter(f => f.querySelector("
                             "'.main-svg') && f._fullData && f._fullData.length).length")
    assert drawn == placeholders
    assert offline.locator("img").count() > 0  # the unit's top images, inline
    assert offline.evaluate("[...document.images].every(i => i.src.startsWith('data:') && i.complete "
                            "&& i.naturalWidth > 0)")
    assert "Verdict" in offline.inner_text(".review-narrative")
    assert offline.evaluate("window.__xss") is None
    assert left == [] and errors == []
    offline.screenshot(path=str(tmp_path / "review_export.png"), full_page=False)
    context.close()


def test_two_people_editing_one_review_lose_nothing(page, site, made, browser):
    other_context = browser.new_context(viewport={"width": 1280, "height": 800})
    other = other_context.new_page()
    open_review(page, site, made)
    open_review(other, site, made)
    save_edits(page, ANN, author="Ann")
    page.wait_for_function("document.querySelector('#review-save-status').textContent.startsWith('Saved version')",
                           timeout=TIMEOUT)
    save_edits(other, "Bob's narrative, written at the same time.", author="Bob")
    refused = other.locator("#review-save-refused")
    refused.wait_for(timeout=TIMEOUT)
    assert refused.inner_text().startswith("Not saved: this review was saved by Ann at ")
    assert "\n" not in refused.inner_text().strip()
    assert other.input_value("#review-narrative") == "Bob's narrative, written at the same time."  # kept
    open_review(page, site, made)
    assert page.input_value("#review-narrative") == ANN  # the store kept Ann's
    # Comments only append: both land, whoever was first.
    page.fill("#review-comment-text", "Ann: agreed.")
    other.fill("#review-comment-text", "Bob: agreed too.")
    page.click("#review-comment-add")
    other.click("#review-comment-add")
    other.wait_for_function("document.querySelector('#review-comment-text').value === ''", timeout=TIMEOUT)
    page.wait_for_function("document.querySelector('#review-comment-text').value === ''", timeout=TIMEOUT)
    open_review(page, site, made)
    comments = page.locator(".review-comment").all_inner_texts()
    assert "Ann: agreed." in comments and "Bob: agreed too." in comments
    other_context.close()


def test_the_reviews_page_lists_it_and_a_review_says_which_runs_are_gone(page, site, made):
    page.goto(site.url + "/reviews")
    page.wait_for_selector("#reviews-table", timeout=TIMEOUT)
    settle(page)
    assert "Which lr for <b>sigmoid</b>?" in page.inner_text("#reviews-table")
    review_id = made.rsplit("/", 1)[1]
    gone = MlflowClient(site.uri).create_run(
        MlflowClient(site.uri).get_experiment_by_name("dash-tests").experiment_id).info.run_id
    client = MlflowClient(site.uri)
    client.set_tag(review_id, C.review_run_tag(gone), C.TRUE)
    client.delete_run(gone)
    open_review(page, site, made)
    assert page.inner_text("#review-missing") == f"This review references runs that are gone: run {gone} was deleted."
    client.delete_tag(review_id, C.review_run_tag(gone))  # leave the review as the other tests expect it


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_review_with_its_narrative_as_description(page, site, made):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from tests.conftest import start_server
    from tests.test_mlflow_ui import _plain
    review = MlflowClient(site.uri).get_run(made.rsplit("/", 1)[1])
    note = review.data.tags[C.TAG_NOTE]
    assert note.strip(), "the review has no narrative"
    server = start_server(["-m", "mlflow", "server", "--backend-store-uri", site.uri, "--host", "127.0.0.1",
                           "--port", "{port}", "--workers", "1"], site.root / "mlflow.log",
                          env={"MLFLOW_TRACKING_URI": site.uri}, timeout=240, own_group=True)
    try:
        page.goto(mlflow_links.run_url(review.info.experiment_id, review.info.run_id, base=server.url))
        page.get_by_text(review.info.run_name, exact=True).first.wait_for(timeout=60000)
        try:  # a long description is folded behind this button; a short one is shown whole
            page.get_by_role("button", name="Expand description").click(timeout=5000)
        except PlaywrightTimeout:
            pass
        for line in filter(None, map(_plain, note.splitlines())):
            page.get_by_text(line, exact=False).first.wait_for(timeout=30000)
        page.screenshot(path=str(site.root / "mlflow_ui_review.png"))
    finally:
        os.killpg(server.proc.pid, signal.SIGTERM)  # the server, its uvicorn and its job consumers
        server.kill()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_review_pages_have_no_serious_or_critical_axe_violation(page, site, made, axe_script, theme):
    from tests.test_accessibility import set_theme, severe_violations
    set_theme(page, theme)
    report = {}
    for path, ready in (("/reviews", "#reviews-table"), (made, "#review-narrative")):
        page.goto(site.url + path)
        page.wait_for_selector(ready, timeout=TIMEOUT)
        settle(page)
        page.wait_for_timeout(500)
        if found := severe_violations(page, axe_script):
            report[path] = found
    assert not report, "\n".join(f"{p} ({theme}):\n  " + "\n  ".join(lines) for p, lines in report.items())
