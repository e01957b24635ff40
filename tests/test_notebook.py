"""The example notebook, run top to bottom on a real ipykernel (nbclient) against a temp MLflow store: its outputs
hold the run page and a unit page as iframes to a live dashboard, and the search_runs summary; without a
dashboard, show_run says in one line how to start one."""
import contextlib
import io
import re
import time
import urllib.request

import nbformat
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port
from training import contract as C
from training.own_loop import notebook

NOTEBOOK = REPO / "training" / "examples" / "writeup_d.ipynb"
IFRAME = re.compile(r'<iframe\s[^>]*src="(http://127\.0\.0\.1:\d+)(/runs/[^"]+)"')


def kernel_on_this_python(tmp_path, monkeypatch) -> str:
    """A kernel spec for this interpreter in a temp prefix, found through JUPYTER_PATH: the test runs on this venv
    whatever kernels the machine has (or lacks)."""
    from ipykernel.kernelspec import install
    install(kernel_name="mnistlab-test", display_name="MNIST Lab test", prefix=str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    return "mnistlab-test"


def html_outputs(cell) -> str:
    return "\n".join(o.get("data", {}).get("text/html", "") for o in cell.get("outputs", []))


def text_outputs(cell) -> str:
    return "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))


def status(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


@pytest.mark.slow
def test_the_notebook_runs_on_a_real_kernel_and_shows_the_run_and_a_unit_inline(tmp_path, monkeypatch):
    from nbclient import NotebookClient
    monkeypatch.delenv(notebook.ENV_URL, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_on_this_python(tmp_path, monkeypatch), timeout=300,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    with client.setup_kernel():  # the dashboard the kernel starts lives as long as the kernel: check it inside
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        frames = [m.groups() for c in nb.cells for m in IFRAME.finditer(html_outputs(c))]
        answers = [status(base + path) for base, path in frames]

    uri = notebook.tracking_uri()
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("notebook").experiment_id])
    assert run.info.status == C.STATUS_FINISHED
    assert [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, C.TEST_ACC)] == [0, 1]
    assert [path for _, path in frames] == [f"/runs/{run.info.run_id}", f"/runs/{run.info.run_id}/neurons/1/0"]
    assert len({base for base, _ in frames}) == 1  # one dashboard, started once
    assert all(code == 200 and b"MNIST Lab" in body for code, body in answers)
    summary = text_outputs(nb.cells[-1]) + html_outputs(nb.cells[-1])
    acc = run.data.metrics[C.TEST_ACC]
    assert run.info.run_id in summary and "FINISHED" in summary and f"{acc:.4f}"[:5] in summary
    base = frames[0][0]
    deadline = time.time() + 20
    while notebook.answers(base) and time.time() < deadline:  # the kernel stopped its dashboard as it exited
        time.sleep(0.5)
    assert not notebook.answers(base)


def test_without_a_dashboard_show_run_says_in_one_line_how_to_start_one(monkeypatch):
    monkeypatch.setenv(notebook.ENV_URL, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert notebook.show_run("0123456789abcdef0123456789abcdef") is None
    assert out.getvalue().count("\n") == 1 and "mnistlab dashboard" in out.getvalue()
    assert notebook.ENV_URL in out.getvalue()

    monkeypatch.delenv(notebook.ENV_URL)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        notebook.show_run("0123456789abcdef0123456789abcdef", start=False)  # a temp store: 8050 is not looked at
    assert out.getvalue().count("\n") == 1 and "mnistlab dashboard" in out.getvalue()
    assert "MLFLOW_TRACKING_URI=" in out.getvalue()


def test_a_page_path_is_below_the_run_and_a_bad_run_id_is_refused_in_one_line():
    assert notebook.page_path("abc123") == "/runs/abc123"
    assert notebook.page_path("abc123", "neurons/1/0") == "/runs/abc123/neurons/1/0"
    with pytest.raises(ValueError, match="is not an MLflow run id"):
        notebook.page_path("../../etc")
