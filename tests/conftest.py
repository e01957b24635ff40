"""Shared fixtures.

- Every test gets its own SQLite MLflow store in tmp_path (MLflow's own tests do the same).
- `trained_store`: one session-wide store with real short training runs on real MNIST,
  plus a "foreign" run logged by a plain script, for the dashboard tests.
- `dashboard_url`: a real dashboard server (python -m dashboard) on a free loopback port over that store.
- `page`: a Playwright page in Debian's headless Chromium that records console errors.
"""
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}/mlflow.db?timeout=60"


@pytest.fixture(scope="session", autouse=True)
def _private_dashboard_cache(tmp_path_factory):
    """The dashboard's on-disk cache lives in this session's temp dir; servers started by tests inherit it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DASHBOARD_CACHE_DIR", str(tmp_path_factory.mktemp("dashboard-cache")))
        yield


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch, request):
    """Point tracking at a fresh store unless the test asks for the shared trained one."""
    if "trained_store" not in request.fixturenames and "dashboard_url" not in request.fixturenames:
        store = tmp_path / "mlruns"
        store.mkdir()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(store))
    yield


def _short_configs():
    from training.config import RunConfig
    common = dict(train_size=2000, epochs=2, experiment="dash-tests")
    return [
        RunConfig(sizes=(784, 20, 10), activation="sigmoid", loss="mse", lr=3.0, batch_size=10, **common),
        RunConfig(sizes=(784, 20, 10), activation="sigmoid", loss="mse", lr=1.0, batch_size=10, seed=1, **common),
        RunConfig(sizes=(784, 16, 16, 10), activation="relu", loss="cross_entropy", optimizer="adam", lr=0.01,
                  batch_size=32, **common),
        RunConfig(arch="cnn", activation="relu", loss="cross_entropy", optimizer="adam", lr=0.01, batch_size=32,
                  train_size=1000, epochs=1, experiment="dash-tests"),
    ]


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory):
    """A store with real short runs (2 MLP cohorts and a CNN) and one foreign run.  Returns its tracking URI.

    Run ids: store.run_ids["sigmoid"], ["sigmoid_b"], ["relu"], ["cnn"], ["foreign"].
    """
    from training.nets.data import load
    from training.engine.loop import cohort_key, train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client

    root = tmp_path_factory.mktemp("trained-store")
    uri = sqlite_uri(root)
    with pytest.MonkeyPatch.context() as env:  # undone when the store is built
        env.setenv("MLFLOW_TRACKING_URI", uri)
        data = load()
        c = client()
        configs = _short_configs()
        ids = []
        groups: dict = {}
        for cfg in configs:
            groups.setdefault(cohort_key(cfg), []).append(cfg)
        by_config = {}
        for cohort in groups.values():
            sink = MlflowSink(c, cohort, data)
            sink.finish(train_cohort(cohort, data, sink).params)
            by_config.update(zip(cohort, sink.run_ids))
        ids = [by_config[cfg] for cfg in configs]
        import mlflow
        mlflow.set_tracking_uri(uri)
        from training.tracking.mlflow_sink import experiment_id
        # As a plain script would, except the artifact root sits beside this temp store, not in ./mlruns.
        with mlflow.start_run(experiment_id=experiment_id(c, "foreign"), run_name="plain script") as run:
            mlflow.log_metric("accuracy", 0.5)
        foreign = run.info.run_id

    class Store:
        tracking_uri = uri
        run_ids = {"sigmoid": ids[0], "sigmoid_b": ids[1], "relu": ids[2], "cnn": ids[3], "foreign": foreign}
    return Store


@pytest.fixture
def trained_store_copy(trained_store, tmp_path, monkeypatch):
    """A private copy of the trained store, for a test that writes to it (names, tags, deleted runs).

    The session's store must stay as built: other tests compare against it.  Only the database is
    copied; the artifacts (snapshots) stay where they are and are only read.  Tracking points at the copy.
    """
    import shutil
    db = Path(trained_store.tracking_uri.split("sqlite:///", 1)[1].split("?", 1)[0])
    shutil.copy(db, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path))

    class Copy:
        tracking_uri = sqlite_uri(tmp_path)
        run_ids = dict(trained_store.run_ids)
    return Copy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_runs(uri: str | None = None, experiment: str | None = None, max_results: int = 1000) -> list:
    """Every run of one experiment (by name), or of every experiment, in the store at `uri` (default: the current one)."""
    from mlflow.tracking import MlflowClient

    from training.location import tracking_uri
    client = MlflowClient(uri or tracking_uri())
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        ids = [exp.experiment_id] if exp else []
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=max_results) if ids else []


class Server:
    """A real server process on a free loopback port: its url, port, process and log file."""

    def __init__(self, proc, port: int, log_path: Path):
        self.proc, self.port, self.log_path = proc, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL its whole process group (start it with own_group=True), workers too: the way a crashed host goes."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=20)


def start_server(args: list[str], log_path: Path, env: dict | None = None, ready: str = "/",
                 timeout: float = 120, port: int | None = None, cwd: Path = REPO, own_group: bool = False) -> Server:
    """Start `python <args>` with every "{port}" in args replaced by a free port, and wait until `ready` answers
    (any HTTP status).  The log goes to a file: an unread pipe fills up and freezes a server mid-test.
    own_group: in a process group of its own, so `Server.kill` takes down the workers it spawns."""
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, *[a.replace("{port}", str(port)) for a in args]], cwd=cwd,
                                env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=own_group)
    server = Server(proc, port, log_path)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(server.url + ready, timeout=5)
            return server
        except urllib.error.HTTPError:
            return server  # it answered (e.g. 401 behind a login)
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(f"server {args} exited with {proc.returncode}: {server.log()[-3000:]}")
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server {args} did not answer within {timeout:.0f} s: {server.log()[-3000:]}")


@contextlib.contextmanager
def served(args: list[str], log_path: Path, env: dict | None = None, ready: str = "/", timeout: float = 120):
    """`start_server` for the length of a with-block; stopped whatever the block did."""
    server = start_server(args, log_path, env, ready, timeout)
    try:
        yield server
    finally:
        server.stop()


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not come up in {timeout}s")


@pytest.fixture(scope="session")
def dashboard_url(trained_store, tmp_path_factory):
    """A real dashboard server over the trained store.  Yields its base URL (no trailing slash)."""
    log_path = tmp_path_factory.mktemp("dashboard-log") / "server.log"
    with served(["-m", "dashboard", "--port", "{port}"], log_path,
                env={"MLFLOW_TRACKING_URI": trained_store.tracking_uri}) as server:
        yield server.url
    if "Traceback" in server.log():
        print(server.log()[-5000:])


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run `make browser` (Debian's chromium package)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh 1280x800 page; page.console_errors collects console errors and page errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.console_errors = []
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    yield pg
    context.close()


def wait_runs_review(page, timeout: float = 60000) -> None:
    """The runs page's parallel coordinates and heatmap drawn with their runs: placeholders stand there until
    the view is read (dashboard.pages.runs), and a placeholder is a Plotly chart too."""
    page.wait_for_function("['runs-parallel', 'runs-heatmap'].every("
                           "(id) => document.querySelector('#' + id + ' .js-plotly-plot')?.data?.length)", timeout=timeout)
    page.wait_for_function("!document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=timeout)


def assert_no_dash_errors(pg) -> None:
    """No console errors and no Dash error pop-up (the dev-tools error badge or a callback error)."""
    assert pg.console_errors == [], pg.console_errors
    assert pg.locator(".dash-fe-error__title").count() == 0


def wait_drawn(pg, ids, timeout: float = 30000) -> None:
    """Wait until each element id holds a drawn Plotly figure and no callback is loading.

    By id, not by a page-wide count of `.main-svg`: Plotly draws two per figure, so a count is
    reached while a later callback has not answered yet."""
    pg.wait_for_function("ids => ids.every(id => document.querySelector(`#${id} .js-plotly-plot .main-svg`))",
                         arg=list(ids), timeout=timeout)
    pg.wait_for_function("!document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=timeout)


def log_contract_run(name, curves=None, params=None, tags=None, experiment="runs", status="FINISHED") -> str:
    """Log a contract-shaped run straight through MlflowClient into the current store (no training).  Returns its id.

    Curves are per-epoch values, step 0 first, e.g. {"test_acc": [0.1, 0.8, 0.9]}.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from training.tracking.mlflow_sink import tracking_uri
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    rid = client.create_run(exp_id, run_name=name, tags=tags or {}).info.run_id
    metrics = [Metric(key, float(v), 1_700_000_000_000 + step, step)
               for key, values in (curves or {}).items() for step, v in enumerate(values)]
    client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in (params or {}).items()])
    if status != "RUNNING":
        client.set_terminated(rid, status)
    return rid


@pytest.fixture
def log_run():
    """`log_contract_run` into this test's own store."""
    return log_contract_run


@pytest.fixture(scope="module")
def module_store(tmp_path_factory):
    """A store shared by one test module (creating a SQLite store costs seconds).  Yields its URI.

    Tests that use it must request `use_module_store` so tracking points at it.
    """
    uri = sqlite_uri(tmp_path_factory.mktemp("module-store"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture
def use_module_store(module_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", module_store)
    return module_store


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        pytest.fail("PostgreSQL is missing: apt-get install postgresql (.ci/run does this)")
    return found[-1]


def as_postgres(*cmd) -> list[str]:
    # PostgreSQL refuses to run as root; as root, run it as Debian's `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster with empty `mlflow` and `optuna` databases.  Yields the `mlflow` one's SQLAlchemy URI."""
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    run = lambda *cmd: subprocess.run(as_postgres(*cmd), check=True, capture_output=True, text=True)
    run(pg_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    run(pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "start",
        "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off")
    try:
        run(pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        # A second database for Optuna studies: its tables (and its alembic_version) beside MLflow's would clash.
        run(pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def examples_store(tmp_path_factory):
    """A store holding both own-loop examples (2 epochs, 2,000 images), each run as a user runs it, and a built-in
    [784,16,16,10] sigmoid run: (tracking URI, each script's CompletedProcess, run id per name).  Session-wide:
    tests/test_examples.py and test_browser_own_loop.py read the same runs, trained once."""
    from tests.test_examples import EXAMPLES, EXPERIMENT, _run
    from training import contract as C
    uri = sqlite_uri(tmp_path_factory.mktemp("own-loops"))
    done = {}
    for name in EXAMPLES:
        done[name] = _run(["-m", f"training.examples.{name}", "--epochs", "2", "--train-size", "2000",
                           "--experiment", EXPERIMENT], uri)
    done["builtin"] = _run(["-m", "training.train", "--sizes", "784,16,16,10", "--activation", "sigmoid",
                            "--loss", "cross_entropy", "--epochs", "2", "--train-size", "2000",
                            "--experiment", EXPERIMENT], uri)
    runs = {}
    for r in all_runs(uri, EXPERIMENT):
        label = r.data.params.get(C.PARAM_ARCH_LABEL)
        runs[next((n for n, l in EXAMPLES.items() if l == label), "builtin")] = r.info.run_id
    return uri, done, runs


@pytest.fixture
def in_examples_store(examples_store, monkeypatch):
    from dashboard.read import cache
    monkeypatch.setenv("MLFLOW_TRACKING_URI", examples_store[0])
    cache.clear()
    return examples_store[2]
