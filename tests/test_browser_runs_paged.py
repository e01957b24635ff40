"""The runs table at the size of real sweeps, in headless Chromium: 10,000 runs paged from the server, and a
run that ends while the table is scrolled deep into a long view."""
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from tests.conftest import assert_no_dash_errors, served, sqlite_uri

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 60000
T0_MS = 1_700_000_000_000
GRID_API = "dash_ag_grid.getApi('runs-grid')"


def log_runs(uri: str, experiment: str, n: int, running_at: int | None = None) -> list[str]:
    """n small runs through MlflowClient, run i started at T0 + i seconds (so the newest, first in the table,
    is the last logged); run `running_at` is left RUNNING.  About 50 runs a second on SQLite."""
    return log_range(uri, MlflowClient(uri).create_experiment(experiment), range(n), running_at)


def log_range(uri: str, exp: str, indices: range, running_at: int | None = None) -> list[str]:
    client = MlflowClient(uri)
    ids = []
    for i in indices:
        rid = client.create_run(exp, run_name=f"run {i:05d}", start_time=T0_MS + 1000 * i).info.run_id
        client.log_batch(rid, metrics=[Metric("test_acc", 0.5 + 0.4 * (i % 97) / 97, T0_MS, 1),
                                       Metric("best_test_acc", 0.5 + 0.4 * (i % 97) / 97, T0_MS, 1)],
                         params=[Param("lr", ("0.1", "1.0", "3.0")[i % 3]), Param("batch_size", ("10", "20")[i % 2]),
                                 Param("seed", str(i))])
        if i != running_at:
            client.set_terminated(rid, "FINISHED", end_time=T0_MS + 1000 * i + 500)
        ids.append(rid)
    return ids


def row(page, index: int) -> str:
    return f'.ag-center-cols-container .ag-row[row-index="{index}"]'


def wait_rows(page, n: int) -> None:
    page.wait_for_function(f"{GRID_API}?.getDisplayedRowCount() === {n}", timeout=TIMEOUT)


def scroll_to(page, index: int) -> None:
    """Scroll the table as a user would drag its scrollbar, until the row is drawn with its data."""
    page.evaluate(f"{GRID_API}.ensureIndexVisible({index}, 'middle')")
    page.wait_for_selector(f"{row(page, index)} .run-link", timeout=TIMEOUT)


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory):
    """10,000 runs logged by two processes (SQLite's busy timeout orders their writes), into memory-backed
    /dev/shm where there is one: a commit there skips the disk's fsync, and the store builds in about half the
    time.  It is the same MLflow store, written through the same public API."""
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="ten-thousand-", dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) \
        else tmp_path_factory.mktemp("ten-thousand")
    try:
        uri = sqlite_uri(root)
        exp = MlflowClient(uri).create_experiment("sweep")
        halves = (range(0, 5_000), range(5_000, 10_000))
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            ids = [rid for part in pool.map(log_range, [uri] * 2, [exp] * 2, halves) for rid in part]
        with served(["-m", "dashboard", "--port", "{port}"], root / "server.log",
                    env={"MLFLOW_TRACKING_URI": uri}) as s:
            yield s.url, exp, ids
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_scroll_to_row_5000_of_10000_tick_three_and_compare_exactly_those(page, ten_thousand):
    url, exp, ids = ten_thousand
    page.goto(f"{url}/?experiment={exp}")
    page.wait_for_selector(f"{row(page, 0)} .run-link", timeout=TIMEOUT)
    assert page.inner_text(f"{row(page, 0)} .run-link") == "run 09999"  # newest first, before the view is read
    page.wait_for_function("document.querySelector('#runs-summary')?.textContent.startsWith('10,000 runs')",
                           timeout=TIMEOUT)
    wait_rows(page, 10_000)  # the view is read: the table knows its length
    # The browser holds only the blocks it was shown, never the 10,000 rows.
    assert page.evaluate(f"{{let n = 0; {GRID_API}.forEachNode((r) => {{ if (r.data) n++; }}); n}}") < 1000

    picked = {}
    for index in (5000, 4998, 5003):
        scroll_to(page, index)
        assert page.inner_text(f"{row(page, index)} .run-link") == f"run {9999 - index:05d}"
        page.locator(f"{row(page, index)} .ag-checkbox-input").check()
        picked[page.get_attribute(row(page, index), "row-id")] = index
    assert set(picked) == {ids[9999 - i] for i in (5000, 4998, 5003)}
    page.wait_for_function("document.querySelector('#runs-compare')?.textContent === 'Compare 3'", timeout=TIMEOUT)
    page.locator("#runs-compare").click()
    page.wait_for_url(re.compile(r"/compare\?runs="), timeout=TIMEOUT)
    assert set(page.url.split("runs=")[1].split(",")) == set(picked)
    page.wait_for_selector("#compare-curve-test_acc .main-svg", timeout=TIMEOUT)
    shown = {page.locator(".legend a").nth(i).get_attribute("href").rsplit("/", 1)[1]
             for i in range(page.locator(".legend a").count())}
    assert shown == set(picked)
    assert_no_dash_errors(page)


def test_a_run_that_ends_while_the_table_is_scrolled_turns_finished_in_place(page, tmp_path):
    uri = sqlite_uri(tmp_path)
    ids = log_runs(uri, "live", 400, running_at=200)
    running, at = ids[200], 399 - 200  # its row, newest first
    with served(["-m", "dashboard", "--port", "{port}"], tmp_path / "server.log", env={"MLFLOW_TRACKING_URI": uri}) as s:
        page.goto(s.url + "/")
        page.wait_for_function("document.querySelector('#runs-summary')?.textContent.includes('1 running')",
                               timeout=TIMEOUT)
        wait_rows(page, 400)
        scroll_to(page, at)
        assert page.get_attribute(row(page, at), "row-id") == running
        assert page.inner_text(f"{row(page, at)} .status-RUNNING") == "RUNNING"
        page.evaluate("window.notReloaded = true")
        viewport = ".ag-body-viewport"
        before = page.eval_on_selector(viewport, "e => e.scrollTop")
        assert before > 5000  # deep in the table, far from the top

        client = MlflowClient(uri)
        client.log_metric(running, "test_acc", 0.99, step=2)
        client.set_terminated(running, "FINISHED")
        started = time.monotonic()
        page.wait_for_selector(f'.ag-row[row-id="{running}"] .status-FINISHED', timeout=TIMEOUT)  # no reload
        assert time.monotonic() - started < 15
        assert page.evaluate("window.notReloaded === true")
        assert page.eval_on_selector(viewport, "e => e.scrollTop") == before
        assert page.get_attribute(row(page, at), "row-id") == running  # the same row, where it was
        page.wait_for_function("!document.querySelector('#runs-summary')?.textContent.includes('running')",
                               timeout=TIMEOUT)
        assert_no_dash_errors(page)
