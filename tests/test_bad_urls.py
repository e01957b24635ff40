"""No dashboard URL, however malformed, produces a traceback or an HTTP 500: it shows a message."""
import shutil

import dash
import pytest
from dash.development.base_component import Component
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from tests.conftest import assert_no_dash_errors, served, sqlite_uri

UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def with_deleted_run(trained_store, tmp_path_factory):
    """A dashboard over a copy of the trained store that also holds a deleted run: (its URL, the run's id).

    A copy, because the session's store must stay as built; the artifacts are shared and only read.
    """
    root = tmp_path_factory.mktemp("deleted-run-store")
    shutil.copy(trained_store.tracking_uri.split("sqlite:///", 1)[1].split("?", 1)[0], root / "mlflow.db")
    c = MlflowClient(sqlite_uri(root))
    run = c.create_run(c.get_experiment_by_name("foreign").experiment_id, run_name="deleted later")
    c.set_terminated(run.info.run_id)
    c.delete_run(run.info.run_id)
    with served(["-m", "dashboard", "--port", "{port}"], root / "server.log",
                env={"MLFLOW_TRACKING_URI": sqlite_uri(root)}) as server:
        yield server.url, run.info.run_id


def bad_paths(ids, deleted):
    sig, cnn = ids["sigmoid"], ids["cnn"]
    return [
        f"/runs/{UNKNOWN}", f"/runs/{deleted}", "/runs/not-a-run", "/runs/..%2F..%2Fetc%2Fpasswd",
        "/runs/%2Fetc%2Fpasswd", f"/runs/{sig}?epoch=999", f"/runs/{sig}?epoch=abc", f"/runs/{sig}?epoch=-1",
        f"/runs/{sig}/neurons?layer=99", f"/runs/{sig}/neurons?layer=0", f"/runs/{sig}/neurons?layer=abc",
        f"/runs/{sig}/neurons?layer=1&epoch=999", f"/runs/{UNKNOWN}/neurons?layer=1",
        f"/runs/{sig}/neurons/1/999", f"/runs/{sig}/neurons/9/0", f"/runs/{sig}/neurons/x/y",
        f"/runs/{sig}/neurons/1/0?epoch=55", f"/runs/{sig}/neurons/1/0?compare=../../etc/passwd",
        f"/runs/{cnn}/neurons/1/99", f"/runs/{ids['foreign']}/neurons?layer=1", f"/runs/{deleted}/neurons/1/0",
        "/compare?runs=", "/compare?runs=,,,", "/compare?runs=zz,../x", f"/compare?runs={UNKNOWN},{deleted}",
        "/compare?runs=" + ",".join([sig] * 25), "/compare?runs=%2Fetc%2Fpasswd",
        f"/runs/{sig}/neurons/circuit", f"/runs/{sig}/neurons/circuit?layer=1&unit=999",
        f"/runs/{sig}/neurons/circuit?layer=abc&unit=0", f"/runs/{sig}/neurons/circuit?layer=1&unit=0&epoch=55",
        f"/runs/{cnn}/neurons/circuit?layer=1&unit=0", f"/runs/{ids['foreign']}/neurons/circuit?layer=1&unit=0",
        f"/runs/{UNKNOWN}/neurons/digits", f"/runs/{sig}/neurons/digits?digit=10",
        f"/runs/{sig}/neurons/digits?digit=-1", f"/runs/{sig}/neurons/digits?digit=x&epoch=99",
        f"/runs/{cnn}/neurons/digits", f"/runs/{deleted}/neurons/digits?digit=3",
        f"/runs/{sig}/neurons/ablation?layer=9", f"/runs/{sig}/neurons/ablation?layer=1&epoch=55",
        f"/runs/{sig}/neurons/ablation?layer=1&mode=max", f"/runs/{ids['foreign']}/neurons/ablation?layer=1",
        f"/runs/{cnn}/neurons/ablation?layer=3", f"/runs/{deleted}/neurons/ablation", f"/runs/{UNKNOWN}/neurons/ablation",
        "/?experiment=999999", "/?experiment=../../x", "/?filter=params.lr%20%3D%3D%3D%20'", "/no/such/page",
    ]


@pytest.mark.browser
def test_every_bad_url_shows_a_message_without_errors(page, trained_store, with_deleted_run):
    dashboard_url, deleted_run = with_deleted_run
    failures = []
    statuses = []
    page.on("response", lambda r: statuses.append((r.status, r.url)) if r.status >= 500 else None)
    for path in bad_paths(trained_store.run_ids, deleted_run):
        page.console_errors.clear()
        page.goto(dashboard_url + path)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(300)
        text = page.inner_text("main") if page.locator("main").count() else page.inner_text("body")
        if page.console_errors or page.locator(".dash-fe-error__title").count() or "Traceback" in text:
            failures.append((path, page.console_errors[:2]))
        elif len(text.strip()) < 10:
            failures.append((path, "blank page"))
    assert failures == [] and statuses == [], (failures, statuses)
    assert_no_dash_errors(page)


# Every page's layout function takes URL values as text; none may raise on any text.
url_text = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(
    ["0", "-1", "1e9", "../..", "/etc/passwd", "%00", UNKNOWN, ",", "1,2", "<script>x</script>"]))


@pytest.fixture(scope="module")
def layouts(trained_store):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
        import dashboard.app  # noqa: F401  (registers the pages; Dash imports them as pages.*)
        yield {p["path_template"] or p["path"]: p["layout"] for p in dash.page_registry.values()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run_id=url_text, layer=url_text, unit=url_text, epoch=url_text, runs=url_text, other=url_text)
def test_page_layouts_never_raise_on_any_url_values(layouts, trained_store, run_id, layer, unit, epoch, runs, other):
    for template, layout in layouts.items():
        if not callable(layout):
            continue
        kwargs = {"run_id": run_id, "layer": layer, "unit": unit, "epoch": epoch, "runs": runs,
                  "experiment": other, "filter": other, "compare": other, "sort": other, "smooth": other,
                  "params": other, "digit": other}
        names = set(layout.__code__.co_varnames[:layout.__code__.co_argcount])
        shown = layout(**{k: v for k, v in kwargs.items() if k in names})
        assert isinstance(shown, Component), (template, shown)  # a page or a message
