"""The package installs anywhere: `pip install` of the clone into a fresh virtual environment outside it, then,
from a folder of its own, the own-loop API imports from that environment, `mnistlab grid` trains into
./mlflow_runs exactly as the clone's code does, and `mnistlab dashboard` serves the run.

Not editable: every file the code reads at run time must be in the package.  The environment reaches the
dependencies already installed for this interpreter through a .pth file, so nothing is downloaded."""
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from common.mnist_idx import data_root
from dashboard.serving.lean_pages import RUNTIME_ROUTE
from tests.conftest import REPO, Server, all_runs, assert_no_dash_errors, free_port, wait_drawn
from training import contract as C
from training.location import default_store, tracking_uri

# What a clone holds that a build must not see: environments, data, stores, build leftovers.
NOT_IN_A_CLONE = (".git", ".venv", "data", "mlflow_runs", "mlruns", "build", "dist", "*.egg-info", "__pycache__",
                  ".cache", ".pytest_cache", "screenshots-tmp", "node_modules")
TINY_GRID = """\
    experiment: packaged
    base: {sizes: [784, 8, 10], activation: sigmoid, loss: cross_entropy, lr: 0.5, epochs: 1, train_size: 500}
    grid: {seed: [0]}
"""


def run(args, cwd: Path, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def outside_env(**extra) -> dict:
    """This process's environment without what points at the clone or at the test session's store."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "MNIST_ROOT")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    """A fresh venv with the clone pip-installed into it, and an empty project folder beside it."""
    root = tmp_path_factory.mktemp("package")
    clone = root / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root,
                    outside_env()).stdout.strip())
    # This interpreter's packages (pip and setuptools among them), after the venv's own on sys.path.
    (site / "lab-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--disable-pip-version-check",
               clone], root, outside_env(), timeout=300)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    project = root / "project"
    project.mkdir()
    return SimpleNamespace(venv=venv, python=python, mnistlab=venv / "bin" / "mnistlab", project=project,
                           env=outside_env(MNIST_ROOT=str(data_root().resolve())))


@pytest.fixture(scope="module")
def trained(installed) -> SimpleNamespace:
    """`mnistlab grid` on a one-config grid, run in the project folder with no store named."""
    (installed.project / "tiny.yaml").write_text(textwrap.dedent(TINY_GRID))
    out = run([installed.mnistlab, "grid", "tiny.yaml"], installed.project, installed.env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    store = installed.project / "mlflow_runs"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    (child,) = [r for r in all_runs(uri, "packaged") if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    return SimpleNamespace(uri=uri, child=child)


def test_the_default_store_is_the_clones_inside_it_and_the_current_folders_elsewhere(tmp_path):
    assert default_store(REPO) == default_store(REPO / "training" / "grids") == REPO / "mlflow_runs"
    assert default_store(tmp_path) == tmp_path.resolve() / "mlflow_runs"


@pytest.mark.slow
def test_the_own_loop_api_imports_from_the_venv_not_the_clone(installed):
    code = "import training.own_loop; from training.own_loop import logged_run; print(training.own_loop.__file__)"
    out = run([installed.python, "-c", code], installed.project, installed.env)
    assert out.returncode == 0, out.stderr
    where = Path(out.stdout.strip()).resolve()
    assert where.is_relative_to(installed.venv.resolve()) and not where.is_relative_to(REPO)


@pytest.mark.slow
def test_mnistlab_lists_its_commands_and_refuses_an_unknown_one_in_one_line(installed):
    out = run([installed.mnistlab, "--help"], installed.project, installed.env)
    assert out.returncode == 0
    for command in ("train", "grid", "dashboard", "backfill", "data"):
        assert f"\n  {command} " in out.stdout, command
    out = run([installed.mnistlab, "trian"], installed.project, installed.env)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "unknown command 'trian'" in out.stderr and "grid" in out.stderr


@pytest.mark.slow
def test_without_mnist_the_command_says_in_one_line_how_to_get_it(installed, tmp_path):
    (tmp_path / "tiny.yaml").write_text(textwrap.dedent(TINY_GRID))
    env = {k: v for k, v in installed.env.items() if k != "MNIST_ROOT"}
    out = run([installed.mnistlab, "grid", "tiny.yaml"], tmp_path, env)
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: data/MNIST/raw/") and "`mnistlab data`" in line and "MNIST_ROOT" in line
    assert not (tmp_path / "mlflow_runs").exists()  # no run is made before the data is good


@pytest.mark.slow
def test_mnistlab_grid_trains_into_the_current_folder_as_the_clone_does(trained, tmp_path):
    from training.grid import main as grid_main
    assert trained.child.info.status == C.STATUS_FINISHED
    assert trained.child.data.params[C.PARAM_SHA256_PREFIX + "train-images-idx3-ubyte"]
    # The reference: the same grid trained here by the clone's code, into this test's store.
    grid = tmp_path / "tiny.yaml"
    grid.write_text(textwrap.dedent(TINY_GRID))
    assert grid_main([str(grid)]) == 0
    (reference,) = [r for r in all_runs(experiment="packaged") if r.data.tags.get(C.TAG_PARENT_RUN_ID)]
    client = MlflowClient(trained.uri)
    for key in (C.TRAIN_LOSS, C.TEST_ACC):
        got = [m.value for m in client.get_metric_history(trained.child.info.run_id, key)]
        assert got == [m.value for m in MlflowClient(tracking_uri()).get_metric_history(reference.info.run_id, key)], key


@pytest.mark.slow
@pytest.mark.browser
def test_mnistlab_dashboard_serves_the_run_from_the_current_folders_store(installed, trained, page):
    port = free_port()
    log_path = installed.project / "dashboard.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(installed.mnistlab), "dashboard", "--port", str(port)], cwd=installed.project,
                                env=installed.env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path)
    try:
        deadline = time.time() + 120
        while True:
            try:
                home = urllib.request.urlopen(server.url + "/", timeout=5)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, server.log()[-3000:]
                time.sleep(0.3)
        assert home.status == 200
        run_id = trained.child.info.run_id
        # The files the package ships: the dashboard's assets and the vendored runtime.
        for path in ("/assets/style.css", "/assets/clientside.js", RUNTIME_ROUTE):
            with urllib.request.urlopen(server.url + path, timeout=10) as response:
                assert response.status == 200 and len(response.read()) > 100, path
        page.goto(f"{server.url}/runs/{run_id}")
        wait_drawn(page, ["run-progress", "run-confusion"], 60000)
        assert page.locator("h2").first.text_content() == trained.child.info.run_name
        assert_no_dash_errors(page)
    finally:
        server.stop()
    assert "Traceback" not in server.log()
    assert f"MLflow store: sqlite:///{installed.project.resolve() / 'mlflow_runs' / 'mlflow.db'}?" in server.log()
