"""Page load in headless Chromium: seconds from navigation until every chart on the page is drawn.

    .venv/bin/python benchmarks/page_load.py [--loads 5]

Trains 9 short real runs into a fresh SQLite store, then serves, side by side:
  ours    the dashboard under gunicorn (`python -m dashboard.serve --workers 2`);
  mlflow  `mlflow ui --workers 2` on the same store (its compare page, in the model-training view; its
          background job runner off, as it serves no page);
  bare    a minimal Dash page under gunicorn with four graphs of 9 traces each, from static figures
          built here from the same runs' metric histories: what the stack costs with no work of ours.
Each load is a fresh browser context (nothing cached in the browser), from `goto` until every Plotly
chart the page shows is drawn (a `.main-svg` in each, none of Dash's components loading), read from the
page's own clock (performance.now(), zero at navigation).  How many charts a page shows is counted on a
warm-up load first (which also warms each server).  Pages load in turn, round after round, so the
machine's slow spells fall on all of them; each line is the median of --loads loads.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.servers import free_port, stop, wait_http  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
GRID = """experiment: page-load
base: {sizes: [784, 30, 10], activation: sigmoid, loss: mse, batch_size: 10, epochs: 5, train_size: 3000}
grid: {lr: [1.0, 3.0, 5.0], seed: [0, 1, 2]}
"""
CHARTED = ("test_acc", "test_loss", "train_acc", "train_loss")
BARE_APP = '''
import json, pathlib
import plotly.io as pio
from dash import Dash, dcc, html
figures = json.loads(pathlib.Path(__file__).with_name("figures.json").read_text())
app = Dash(__name__)
app.layout = html.Div([dcc.Graph(figure=pio.from_json(json.dumps(f))) for f in figures])
server = app.server
'''
# True once every chart is drawn and no Dash component is loading: then the page's clock, else false.
ALL_DRAWN = """(n) => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  if (plots.length < n || document.querySelector('[data-dash-is-loading="true"]')) return false;
  return plots.every(p => p.querySelector('.main-svg')) ? performance.now() : false;
}"""
# Charts drawn so far, none of Dash's components loading (-1 while one is).
COUNT_DRAWN = """() => document.querySelector('[data-dash-is-loading="true"]') ? -1
  : [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length"""


def train_runs(tmp: Path, env: dict) -> list:
    grid = tmp / "page-load.yaml"
    grid.write_text(GRID)
    out = subprocess.run([sys.executable, "-m", "training.grid", str(grid)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"error: training the runs failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    from mlflow.tracking import MlflowClient
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("page-load")
    runs = [r for r in client.search_runs([exp.experiment_id]) if "grid.config_hash" in r.data.tags]
    return sorted(runs, key=lambda r: r.info.run_name)


def bare_figures(runs, uri: str) -> list[dict]:
    import plotly.graph_objects as go
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    figures = []
    for key in CHARTED:
        fig = go.Figure()
        for run in runs:
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            fig.add_scatter(x=[m.step for m in history], y=[m.value for m in history], name=run.info.run_name)
        fig.update_layout(title=key, height=320)
        figures.append(json.loads(fig.to_json()))
    return figures


def start_servers(tmp: Path, env: dict, runs, procs: list[subprocess.Popen]) -> dict[str, str]:
    """The three servers, appended to procs as they start; returns the URL of each page to time."""
    ours, mlflow_port, bare = free_port(), free_port(), free_port()
    log = open(tmp / "servers.log", "w")
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    commands = [
        ([sys.executable, "-m", "dashboard.serve", "--port", str(ours), "--workers", "2"], REPO, env),
        ([mlflow, "ui", "--backend-store-uri", env["MLFLOW_TRACKING_URI"], "--port", str(mlflow_port), "--workers", "2"],
         tmp, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
        ([gunicorn, "--bind", f"127.0.0.1:{bare}", "--workers", "2", "--chdir", str(tmp), "--no-control-socket",
          "bare_app:server"], tmp, env),
    ]
    for argv, cwd, proc_env in commands:
        procs.append(subprocess.Popen(argv, cwd=cwd, env=proc_env, stdout=log, stderr=log, start_new_session=True))
    for port, proc in zip((ours, mlflow_port, bare), procs):
        wait_http(f"http://127.0.0.1:{port}/", proc)
    from dashboard.read.mlflow_links import compare_url
    ids = [r.info.run_id for r in runs]
    first = ids[0]
    pages = {
        "runs page (ours)": f"http://127.0.0.1:{ours}/",
        "compare, 9 runs (ours)": f"http://127.0.0.1:{ours}/compare?runs={','.join(ids)}",
        "compare, 9 runs (mlflow ui)": compare_url(runs, base=f"http://127.0.0.1:{mlflow_port}"),
        "bare stack, 4 static charts": f"http://127.0.0.1:{bare}/",
        "run page (ours)": f"http://127.0.0.1:{ours}/runs/{first}",
        "unit page (ours)": f"http://127.0.0.1:{ours}/runs/{first}/neurons/1/0",
    }
    return pages


def load_once(browser, url: str, n_plots: int) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit")
        return page.wait_for_function(ALL_DRAWN, arg=n_plots, polling="raf", timeout=120_000).json_value() / 1000
    finally:
        context.close()


def count_plots(browser, url: str, settle: float = 3.0) -> int:
    """How many charts the page ends up drawing: their count once it has held for `settle` seconds.

    Not "network idle": `mlflow ui` with 2 workers keeps a request open for minutes on a machine with
    no internet, so that never comes."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url, wait_until="load", timeout=120_000)
        deadline = time.monotonic() + 120
        count, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            drawn = page.evaluate(COUNT_DRAWN)
            if drawn != count:
                count, since = drawn, time.monotonic()
            elif drawn and time.monotonic() - since >= settle:  # the charts that come later, from callbacks
                return drawn
            page.wait_for_timeout(200)
        return count if count > 0 else 0
    finally:
        context.close()


def measure(pages: dict[str, str], loads: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        counts = {name: count_plots(browser, url) for name, url in pages.items()}
        for name, n in counts.items():
            print(f"  {name}: {n} chart(s)")
            if n == 0:
                sys.exit(f"error: {name} drew no chart at {pages[name]}")
        times = {name: [] for name in pages}
        for r in range(loads):
            for name, url in pages.items():
                times[name].append(load_once(browser, url, counts[name]))
            print(f"  round {r + 1}: " + "   ".join(f"{t[-1]:.2f}" for t in times.values()))
        browser.close()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loads", type=int, default=5, help="loads of each page, in rounds (default %(default)s)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "DASHBOARD_CACHE_DIR": str(tmp / "cache")}
        runs = train_runs(tmp, env)
        (tmp / "figures.json").write_text(json.dumps(bare_figures(runs, env["MLFLOW_TRACKING_URI"])))
        (tmp / "bare_app.py").write_text(BARE_APP)
        procs: list[subprocess.Popen] = []
        try:
            times = measure(start_servers(tmp, env, runs, procs), args.loads)
        finally:
            stop(procs)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:<30} {med[name]:6.2f} s  (median of {len(t)}; {min(t):.2f}-{max(t):.2f})")
    ours, theirs, bare = (med["compare, 9 runs (ours)"], med["compare, 9 runs (mlflow ui)"],
                          med["bare stack, 4 static charts"])
    print(f"compare of 9 runs: mlflow ui / ours = {theirs / ours:.2f}x (goal at least 2.5x); "
          f"bare stack / ours = {bare / ours:.2f}x (goal at least 1.0x)")


if __name__ == "__main__":
    main()
