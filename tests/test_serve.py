"""The team deployment: `python -m dashboard.serve` (what `make serve` runs) under real gunicorn.

Two workers in Chromium, the optional login on every route, the bind warnings, the shared cache on disk.
"""
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from dashboard.read import cache
from tests.conftest import REPO, assert_no_dash_errors, free_port, start_server

AUTH = ("ann", "correct horse battery staple")
FIGURES = 10  # the run page's figure sections (tests/test_browser_run_detail.py)


def serve(tmp_path, tracking_uri, *, host="127.0.0.1", workers=2, auth=None):
    """Start `python -m dashboard.serve` and wait until it answers (any status: with a login it is 401).

    The server's `cache_dir` is its own; an empty DASHBOARD_USER/PASSWORD is the same as unset.
    """
    login = {"DASHBOARD_USER": auth[0], "DASHBOARD_PASSWORD": auth[1]} if auth else \
        {"DASHBOARD_USER": "", "DASHBOARD_PASSWORD": ""}
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "DASHBOARD_CACHE_DIR": str(tmp_path / "cache"), **login}
    server = start_server(["-m", "dashboard.serve", "--host", host, "--port", "{port}", "--workers", str(workers)],
                          tmp_path / "serve.log", env=env)
    server.cache_dir = tmp_path / "cache"
    return server


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
@pytest.mark.browser
def test_gunicorn_with_two_workers_serves_the_runs_page_and_a_run_page_in_chromium(page, trained_store, tmp_path):
    served = serve(tmp_path, trained_store.tracking_uri, workers=2)
    try:
        assert f"Dashboard: {served.url}/ (gunicorn, 2 workers)" in served.log()
        # serve execs gunicorn, so its pid is the master's; the first worker may answer before the second is up
        deadline = time.time() + 60
        while len(worker_pids(served.proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.3)
        assert len(worker_pids(served.proc.pid)) == 2
        page.goto(served.url + "/")
        page.wait_for_selector(".ag-row .run-link", timeout=30000)
        page.goto(f"{served.url}/runs/{trained_store.run_ids['sigmoid']}")
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {FIGURES}",
                               timeout=60000)
        page.wait_for_function("!document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=30000)
        assert_no_dash_errors(page)
        # What the workers read of this finished run is now on disk for every worker.
        folder = served.cache_dir / os.path.basename(cache.directory(trained_store.tracking_uri))
        assert any((folder / "arrays").iterdir()), "no snapshot in the shared cache"
        assert sum(1 for _ in (folder / "small").iterdir()) > 1, "no histories in the shared cache"
    finally:
        served.stop(timeout=30)


@pytest.mark.browser
def test_with_a_user_and_password_set_every_route_needs_the_login(browser, log_run, tmp_path):
    log_run("a run", curves={"test_acc": [0.1, 0.5]})  # into this test's own store
    served = serve(tmp_path, os.environ["MLFLOW_TRACKING_URI"], workers=2, auth=AUTH)
    try:
        assert "auth: on" in served.log() and "warning" not in served.log()
        # The browser logs in once and every page, asset and callback request carries it.
        context = browser.new_context(http_credentials={"username": AUTH[0], "password": AUTH[1]})
        tab = context.new_page()
        errors, calls = [], []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("request", lambda r: calls.append(r) if "/_dash-update-component" in r.url else None)
        tab.goto(served.url + "/")
        tab.wait_for_selector(".ag-row .run-link", timeout=30000)
        context.close()
        assert errors == [] and calls, errors
        callback, asset = calls[0], "/assets/" + sorted(os.listdir(REPO / "dashboard" / "assets"))[0]
        body, headers = callback.post_data_buffer, {"Content-Type": "application/json"}
        routes = [("GET", "/", None), ("GET", "/_dash-layout", None), ("GET", asset, None),
                  ("POST", "/_dash-update-component", body)]
        for method, path, data in routes:
            for creds in (None, (AUTH[0], "wrong"), ("bob", AUTH[1])):
                r = requests.request(method, served.url + path, data=data, headers=headers, auth=creds, timeout=30)
                assert r.status_code == 401, (method, path, creds)
                assert r.headers["WWW-Authenticate"].startswith("Basic ")
            r = requests.request(method, served.url + path, data=data, headers=headers, auth=AUTH, timeout=60)
            assert r.status_code == 200, (method, path, r.text[:300])
    finally:
        served.stop(timeout=30)


def _first_lines(args: list[str], env_extra: dict, tmp_path) -> tuple[str, subprocess.Popen]:
    """Start a dashboard command, read what it prints before it serves, then stop it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASHBOARD_CACHE_DIR": str(tmp_path / "cache"), **env_extra}
    for name in ("DASHBOARD_USER", "DASHBOARD_PASSWORD"):
        if name not in env_extra:
            env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # the last line before serving names the URL
            lines.append(line)
            if line.startswith("Dashboard: ") or "error:" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return "".join(lines), proc


@pytest.mark.parametrize("module", ["dashboard", "dashboard.serve"])
def test_binding_to_all_interfaces_without_a_login_prints_a_warning(module, tmp_path):
    extra = ["--workers", "1"] if module == "dashboard.serve" else []
    port = str(free_port())
    exposed, _ = _first_lines([module, "--host", "0.0.0.0", "--port", port, *extra], {}, tmp_path)
    assert re.search(r"^warning: binding to 0\.0\.0\.0 exposes the dashboard to the network without a login; "
                     r"set DASHBOARD_USER and DASHBOARD_PASSWORD", exposed, re.M), exposed
    assert f"Dashboard: http://0.0.0.0:{port}/" in exposed

    login = {"DASHBOARD_USER": AUTH[0], "DASHBOARD_PASSWORD": AUTH[1]}
    protected, _ = _first_lines([module, "--host", "0.0.0.0", "--port", port, *extra], login, tmp_path)
    assert "warning: binding" not in protected and "auth: on (HTTP basic, user 'ann'" in protected, protected
    assert AUTH[1] not in protected

    local, _ = _first_lines([module, "--port", port, *extra], {}, tmp_path)
    assert "warning: binding" not in local and "auth: on" not in local, local


def test_a_user_without_a_password_is_refused_with_a_one_line_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASHBOARD_USER": "ann"}
    env.pop("DASHBOARD_PASSWORD", None)
    done = subprocess.run([sys.executable, "-m", "dashboard.serve", "--port", str(free_port())], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DASHBOARD_PASSWORD is not set: set both DASHBOARD_USER and DASHBOARD_PASSWORD" in done.stderr


@pytest.mark.parametrize("module", ["dashboard.serve", "dashboard.launch"])
def test_a_port_in_use_is_one_line_and_exit_2_before_anything_starts(module, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("DASHBOARD_USER", "DASHBOARD_PASSWORD"):
        env.pop(name, None)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", module, "--port", str(port)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == (f"error: 127.0.0.1:{port} is already in use (another dashboard?); pick another port, "
                           f"e.g. --port {port + 1} (make: PORT={port + 1})\n")
    assert "Dashboard:" not in done.stdout and "Training" not in done.stdout


def test_a_fresh_server_answers_its_first_requests_at_once_on_every_thread(tmp_path):
    """Dash finishes its setup on a server's first request, and a threaded server (the dashboard's own, as
    `python -m dashboard` runs it) takes several at once: from the moment it listens, every request of a
    browser's first burst is answered, none with a 500 ("not a registered library") while the setup is under
    way.  Without the setup before serving (dashboard.app) about one start in three answered one with a 500."""
    paths = ["/_dash-component-suites/dash_ag_grid/dash_ag_grid.min.js",
             "/_dash-component-suites/dash/dcc/dash_core_components.js", "/_dash-dependencies", "/_dash-layout"] * 8
    env = {**os.environ, "DASHBOARD_CACHE_DIR": str(tmp_path / "cache"), "DASHBOARD_USER": "", "DASHBOARD_PASSWORD": ""}
    for start in range(4):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--port", str(port)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

        def first(path):
            deadline = time.time() + 120
            while True:  # asked until the port listens: no readiness probe sets the server up first
                try:
                    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=60).status_code
                except requests.ConnectionError:
                    assert time.time() < deadline and proc.poll() is None, "the server did not start"
                    time.sleep(0.05)
        try:
            with ThreadPoolExecutor(len(paths)) as pool:
                codes = list(pool.map(first, paths))
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(30)
        assert codes == [200] * len(codes), (start, codes)
