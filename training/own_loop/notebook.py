"""A run's dashboard page inline in Jupyter: `show_run(run.run_id)` after a `logged_run` block.

    from training.own_loop.notebook import show_run
    show_run(run.run_id)                        # the run page, /runs/<id>
    show_run(run.run_id, page="neurons/1/0")    # unit 0 of the first hidden layer

The page is an iframe to a real dashboard server, found or started:
- DASHBOARD_URL, when set, is the one to use (a dashboard you serve yourself, e.g. `mnistlab dashboard`);
- else, for the default store (no MLFLOW_TRACKING_URI), the one `make run` serves on 127.0.0.1:8050 if it answers;
- else one started in the background over this kernel's store (`python -m dashboard` on a free loopback
  port), kept for the kernel's life and stopped when it exits.
Where none answers, one line says how to start one.  This module starts the dashboard as a process and never
imports it: training never imports the dashboard.
"""
import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from training.location import REPO_ROOT, tracking_uri, uses_default_store

ENV_URL = "DASHBOARD_URL"
DEFAULT_URL = "http://127.0.0.1:8050"  # where `make run` and `mnistlab dashboard` serve
START_TIMEOUT_S = 120  # the dashboard imports torch, plotly and MLflow before it answers; a busy machine is slow
FRAME_HEIGHT = 720
BRAND = b"MNIST Lab"  # the dashboard's title: what tells it from another server on the same port

_started: dict[str, tuple[subprocess.Popen, str]] = {}  # tracking URI -> (the dashboard this kernel started, its url)


def page_path(run_id: str, page: str = "run") -> str:
    """The dashboard path of a run's page: "run" is /runs/<id>; anything else is a path below it
    ("neurons", "neurons/1/0", "images/7")."""
    run_id, page = str(run_id).strip(), str(page).strip().strip("/")
    if not run_id or not run_id.replace("-", "").isalnum():
        raise ValueError(f"run id {run_id[:40]!r} is not an MLflow run id: pass run.run_id")
    base = f"/runs/{urllib.parse.quote(run_id)}"
    return base if page in ("", "run") else f"{base}/{urllib.parse.quote(page)}"


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when an MNIST Lab dashboard answers at url (a login prompt counts: the iframe asks for it)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=timeout) as r:
            return BRAND in r.read(200_000)
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(timeout: float = START_TIMEOUT_S) -> str | None:
    """A dashboard over this kernel's store, started once as a background process; its url, or None when it
    did not answer within timeout (its log's last line is printed)."""
    uri = tracking_uri()
    if uri in _started and _started[uri][0].poll() is None:
        return _started[uri][1]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w+", prefix="mnistlab-dashboard-", suffix=".log", delete=False)
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": path}
    proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    atexit.register(_stop, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if answers(url):
            _started[uri] = (proc, url)
            return url
        time.sleep(0.5)
    _stop(proc)
    log.seek(0)
    last = (log.read().strip().splitlines() or ["no output"])[-1]
    print(f"The dashboard did not start ({last[:160]}; log: {log.name})")
    return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def find_dashboard(start: bool = True) -> str | None:
    """The url of the dashboard to show pages from (see the module docstring), or None."""
    if os.environ.get(ENV_URL):
        url = os.environ[ENV_URL].rstrip("/")
        return url if answers(url) else None
    if uses_default_store() and answers(DEFAULT_URL):
        return DEFAULT_URL
    return start_dashboard() if start else None


def how_to_start() -> str:
    if os.environ.get(ENV_URL):
        return (f"No dashboard answers at {ENV_URL}={os.environ[ENV_URL]}: start one there "
                f"(`mnistlab dashboard --port <its port>`), or unset {ENV_URL} to let show_run start one")
    store = "" if uses_default_store() else f"MLFLOW_TRACKING_URI='{tracking_uri()}' "
    return (f"No dashboard to show: in a terminal, run `{store}mnistlab dashboard` (or `python -m dashboard`), "
            f"then show_run(run_id, url='{DEFAULT_URL}')")


def show_run(run_id: str, page: str = "run", url: str | None = None, start: bool = True,
             height: int = FRAME_HEIGHT):
    """Show a run's dashboard page inline (an IFrame, displayed; returned as None so that a cell ending with the
    call shows it once); without a dashboard it can reach or start, print one line saying how to start one.

    page: "run", or a path below the run ("neurons", "neurons/<layer>/<unit>", "images/<index>").
    url: a dashboard to use (skips the search); start=False: never start one."""
    from IPython.display import IFrame, display
    path = page_path(run_id, page)
    base = url.rstrip("/") if url else find_dashboard(start)
    if base is None or (url and not answers(base)):
        print(how_to_start() if base is None else f"No dashboard answers at {base}: start one there "
              f"(`mnistlab dashboard`) or leave url out to let show_run start one")
        return
    frame = IFrame(base + path, width="100%", height=height)
    display(frame)
