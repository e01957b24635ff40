"""The dashboard under load: 20 simulated users at once through the main pages, against `make serve`.

    python benchmarks/dashboard_load.py [--users 20] [--seconds 30] [--think 5] [--workers 4] [--url URL]

Without --url it starts what `make serve` starts (gunicorn, --workers workers) on a free loopback port over
the store in MLFLOW_TRACKING_URI (default: mlflow_runs/), with an empty shared cache of its own.

The requests are the real ones: headless Chromium opens each page once and every request the page makes
to the server is recorded (the page shell, /_dash-layout, /_dash-dependencies and each Dash callback POST
with its exact JSON body).  Static files (/_dash-component-suites/, /assets/) are left out: a browser
caches them after the first visit.  The pages:

  runs        /                                   the runs grid and its review figures
  compare     /compare?runs=A,B,C                 3 runs
  run         /runs/A                             one run's detail page
  neurons     /runs/A/neurons?layer=1             the first hidden layer's tiles

Three phases, each reported on its own:
  cold      on the fresh server every user opens every page once, all at the same moment: each
            worker's first visits (reported, not part of the goal);
  1 user    the baseline: one user alone, clicking on at once, for --baseline-seconds;
  20 users  --users at once for --seconds.  Each replays the pages in that order, each page's requests
            one after another, and reads each page for --think seconds on average (uniform between half
            and one and a half times it; users start spread over the first think time).  --think 0 is a
            stress test: every user clicks again the moment a page is complete.
Reported: requests and pages per second, p50/p95/max latency per request and per page, each page's p95,
and errors (any status but 200/204, or no answer).  Goal: zero errors and request p95 under 1 s for 20
users on 2 cores.  With DASHBOARD_USER and DASHBOARD_PASSWORD set, every request (and the browser) logs in.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import random

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

CHROMIUM = "/usr/bin/chromium"
STATIC = ("/_dash-component-suites/", "/assets/", "/_favicon.ico", "/favicon.ico")
OK = (200, 204)  # 204: a callback that prevented its update


@dataclass
class Request:
    method: str
    path: str
    body: bytes | None
    content_type: str | None


@dataclass
class Page:
    name: str
    path: str
    requests: list[Request] = field(default_factory=list)


def pick_pages() -> list[Page]:
    """Pages over real runs of the store: 3 finished runs to compare, the first with snapshots for detail/neurons."""
    from dashboard.read import store
    runs = store.search_runs([e["id"] for e in store.experiments()])
    finished = [r for r in runs if store.is_finished(r) and store.layer_names(r)]
    with_snapshots = [r for r in finished
                      if r.data.params.get("sizes", "cnn") != "cnn" and store.snapshot_epochs(r.info.run_id)]
    if len(finished) < 3 or not with_snapshots:
        sys.exit("the store needs 3 finished runs, one an MLP with snapshots: train some first (make run)")
    one = with_snapshots[0].info.run_id
    compare = ",".join([one] + [r.info.run_id for r in finished if r.info.run_id != one][:2])
    return [Page("runs", "/"), Page("compare", f"/compare?runs={compare}"), Page("run", f"/runs/{one}"),
            Page("neurons", f"/runs/{one}/neurons?layer=1")]


def capture(base: str, pages: list[Page], auth) -> None:
    """Open each page in Chromium and record the requests it sends to the server."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for page in pages:
            context = browser.new_context(viewport={"width": 1280, "height": 800},
                                          http_credentials={"username": auth[0], "password": auth[1]} if auth else None)
            tab = context.new_page()
            errors = []
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("request", lambda r, page=page: page.requests.append(
                Request(r.method, r.url[len(base):], r.post_data_buffer, r.headers.get("content-type")))
                if r.url.startswith(base) and not r.url[len(base):].startswith(STATIC) else None)
            tab.goto(base + page.path, wait_until="networkidle", timeout=120_000)
            tab.wait_for_timeout(1500)  # callbacks chained on earlier outputs
            tab.wait_for_load_state("networkidle")
            context.close()
            if errors:
                sys.exit(f"{page.name}: the browser logged errors, so there is nothing honest to replay: {errors[:3]}")
            posts = sum(r.method == "POST" for r in page.requests)
            print(f"captured {page.name:8s} {page.path[:60]:60s} {len(page.requests):3d} requests ({posts} callbacks)")
        browser.close()


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds per request
    page_latencies: list[float] = field(default_factory=list)
    by_page: dict = field(default_factory=dict)  # page name -> page latencies
    errors: list[str] = field(default_factory=list)
    pages: int = 0


def user(base: str, pages: list[Page], auth, stop: float, think: float, out: Result, lock: threading.Lock,
         seed: int, cycles: int | None = None) -> None:
    session = requests.Session()
    session.auth = auth
    rnd = random.Random(seed)
    time.sleep(rnd.uniform(0, think))  # people do not all click at the same instant
    while time.monotonic() < stop and cycles != 0:
        cycles = None if cycles is None else cycles - 1
        for page in pages:
            t_page, lat, errs = time.perf_counter(), [], []
            for r in page.requests:
                t0 = time.perf_counter()
                try:
                    resp = session.request(r.method, base + r.path, data=r.body, timeout=60,
                                           headers={"Content-Type": r.content_type} if r.content_type else None)
                    resp.content  # noqa: B018 -- read the whole answer
                    if resp.status_code not in OK:
                        errs.append(f"{resp.status_code} {r.method} {r.path[:60]}")
                except requests.RequestException as e:
                    errs.append(f"{type(e).__name__} {r.method} {r.path[:60]}")
                lat.append(time.perf_counter() - t0)
            with lock:
                out.latencies += lat
                out.page_latencies.append(time.perf_counter() - t_page)
                out.by_page.setdefault(page.name, []).append(time.perf_counter() - t_page)
                out.errors += errs
                out.pages += 1
            if think:
                time.sleep(min(rnd.uniform(0.5 * think, 1.5 * think), max(0.0, stop - time.monotonic())))
            if time.monotonic() >= stop:
                break


def load(base: str, pages: list[Page], auth, users: int, seconds: float, think: float,
         cycles: int | None = None) -> tuple[Result, float]:
    out, lock = Result(), threading.Lock()
    stop = time.monotonic() + seconds
    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(base, pages, auth, stop, think, out, lock, i, cycles))
               for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - t0


def report(label: str, res: Result, wall: float) -> dict:
    lat, plat = np.array(res.latencies) * 1000, np.array(res.page_latencies) * 1000
    row = {"rps": len(lat) / wall, "pps": res.pages / wall, "p50": np.percentile(lat, 50),
           "p95": np.percentile(lat, 95), "max": lat.max(),
           "page_p50": np.percentile(plat, 50), "page_p95": np.percentile(plat, 95)}
    print(f"{label:10s} {len(lat):6d} req {row['rps']:6.1f} req/s {row['pps']:5.2f} pages/s | "
          f"request p50 {row['p50']:6.0f} p95 {row['p95']:6.0f} max {row['max']:6.0f} ms | "
          f"page p50 {row['page_p50']:6.0f} p95 {row['page_p95']:6.0f} ms | errors {len(res.errors)}")
    print("           page p95: " + ", ".join(f"{name} {np.percentile(v, 95) * 1000:.0f} ms"
                                              for name, v in res.by_page.items()))
    for e in sorted(set(res.errors))[:5]:
        print(f"  error: {e} (x{res.errors.count(e)})")
    return row


def start_server(workers: int, cache_dir: str) -> tuple[subprocess.Popen, str]:
    from dashboard.serve import gunicorn_argv
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASHBOARD_CACHE_DIR": cache_dir}
    proc = subprocess.Popen(gunicorn_argv("127.0.0.1", port, workers), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            requests.get(base + "/", auth=credentials(), timeout=5)
            return proc, base
        except requests.RequestException:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"gunicorn did not come up on {base}: {proc.communicate()[1][-2000:]}")


def credentials():
    from dashboard.serving.auth import credentials as creds
    return creds()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a dashboard already running (default: start gunicorn like `make serve`)")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--baseline-seconds", type=float, default=15.0)
    p.add_argument("--think", type=float, default=5.0, help="mean seconds a user reads a page (0: stress test)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", 4)), help="as make serve (default 4)")
    args = p.parse_args(argv)

    from training.tracking.mlflow_sink import tracking_uri
    print(f"store: {tracking_uri()}  cores: {os.cpu_count()}")
    pages = pick_pages()
    auth = credentials()
    proc, cache_dir = None, None
    try:
        if args.url:
            base = args.url.rstrip("/")
        else:
            cache_dir = tempfile.mkdtemp(prefix="dashboard-load-cache-")
            proc, base = start_server(args.workers, cache_dir)
            print(f"gunicorn: {base} ({args.workers} workers), shared cache {cache_dir}")
        capture(base, pages, auth)  # also the first visit of every page: what the caches hold from here on
        # A fresh server: every user opens every page once, at the same moment.  Each worker reads what it
        # needs from the store (or the shared cache) for the first time here; reported, not part of the goal.
        report("cold", *load(base, pages, auth, args.users, 600, 0, cycles=1))
        # The baseline: one user alone, clicking on at once, so the latency of a quiet server is well sampled.
        base_res, base_wall = load(base, pages, auth, 1, args.baseline_seconds, 0)
        one = report("1 user", base_res, base_wall)
        print(f"each user: {len(pages)} pages in turn, {args.think:g} s reading time on average between them")
        res, wall = load(base, pages, auth, args.users, args.seconds, args.think)
        many = report(f"{args.users} users", res, wall)
        print(f"ratio {args.users} users / 1 user: request p50 x{many['p50'] / one['p50']:.1f}, "
              f"request p95 x{many['p95'] / one['p95']:.1f}, page p95 x{many['page_p95'] / one['page_p95']:.1f}")
        ok = not res.errors and many["p95"] < 1000
        print(f"goal (zero errors, request p95 < 1000 ms with {args.users} users): {'met' if ok else 'NOT met'}")
    finally:
        if proc:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if "Traceback" in (err or ""):
                print(err[-3000:], file=sys.stderr)
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
