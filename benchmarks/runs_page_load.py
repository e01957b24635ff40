"""The runs page of a large store in headless Chromium: seconds until its table shows its first rows, beside MLflow's.

    .venv/bin/python benchmarks/runs_page_load.py [--store DIR] [--runs 10000] [--loads 5] [--no-server] [--code DIR]

The store is benchmarks/bulk_store.py's (DIR reused, topped up to --runs if it holds fewer; else a temporary
one); the pages show its first experiment, bulk-0, which holds nine runs in ten.  Timed, each from navigation
(the page's own clock, performance.now()) until the runs table shows FIRST_ROWS rows with a run name:
  ours      /?experiment=<id>, and the same with FILTER: AG Grid rows in #runs-grid whose run-name cell
            (col-id "name") has text (a row still loading in a server-paged table has none);
  MLflow's  its experiment page in the model-training view (#/experiments/<id>/runs?workflowType=
            machine_learning), and the same with FILTER as its searchFilter URL parameter (what its search
            box writes there): rows of its runs table whose "Run Name" cell has text.
On each backend in turn: SQLite (our dashboard on the sqlite URI, `mlflow ui` on the same file), then
through `mlflow server` (our dashboard with MLFLOW_TRACKING_URI=http://..., MLflow's page from that
server's own UI) unless --no-server.  Our dashboard runs under gunicorn (`python -m dashboard.serve
--workers 2`), from --code (a checkout of another commit, to time its page; default this repository).
One warm-up load of each page, then --loads rounds of every page in turn, each load in a fresh browser
context; each figure is a median.  For our pages it also prints the time until the review figures are drawn
(#runs-parallel and #runs-heatmap each hold a .main-svg and a trace) on the same (warm) loads, and, after the loads,
the dashboard's gunicorn workers' resident memory from /proc (VmHWM: the peak; VmRSS: now).
Goal (issue #27): ours at most 0.5x MLflow's.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote, urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bulk_store  # noqa: E402
from benchmarks.dashboard_latency import start_mlflow_server  # noqa: E402
from benchmarks.page_load import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from benchmarks.servers import free_port, stop, wait_http  # noqa: E402

FIRST_ROWS = 10
FILTER = "params.lr = '3.0' and metrics.best_test_acc > 0.9"
TIMEOUT_MS = 300_000
VIEWPORT = {"width": 1280, "height": 800}
OURS_NAME_CELL = '#runs-grid .ag-cell[col-id="name"]'
MLFLOW_NAME_CELL = '.ag-cell[col-id*="Run Name"]'
# performance.now() once n distinct rows have a run-name cell with text, else false.  A row AG Grid is still
# loading draws skeletons (no text); its loading classes are left out as well, should a version write a label.
ROWS_SHOWN = """([cells, n]) => {
  const rows = new Set();
  for (const c of document.querySelectorAll(cells)) {
    const row = c.closest('[row-index]');
    const loading = c.closest('.ag-row-loading') || c.querySelector('.ag-loading, .ag-skeleton-container');
    if (row && !loading && c.textContent.trim()) rows.add(row.getAttribute('row-index'));
  }
  return rows.size >= n ? performance.now() : false;
}"""
# performance.now() once both review charts are drawn with a trace each, else false: a chart that only holds a
# message (while the view is read) has a .main-svg too, but no trace.
FIGURES_DRAWN = """() => ['#runs-parallel', '#runs-heatmap'].every(id => {
  const gd = document.querySelector(id + ' .js-plotly-plot');
  return gd && gd.querySelector('.main-svg') && (gd._fullData || []).length > 0;
}) ? performance.now() : false"""


def start_dashboard(code: Path, uri: str, cache: Path, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DASHBOARD_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "dashboard.serve", "--port", str(port), "--workers", "2"],
                            cwd=code, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc, timeout=180)
    return proc, url


def start_mlflow_ui(uri: str, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow, "ui", "--backend-store-uri", uri, "--port", str(port), "--workers", "2"],
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc, timeout=180)
    return proc, url


def pages(ours: str, mlflow: str, experiment_id: str) -> dict[tuple[str, str], tuple[str, str]]:
    """{(page, whose): (url, run-name cell selector)}."""
    def mlflow_url(query: dict) -> str:
        return f"{mlflow}/#/experiments/{quote(experiment_id)}/runs?" + urlencode(
            {**query, "workflowType": "machine_learning"}, quote_via=quote)
    return {("runs page", "ours"): (f"{ours}/?experiment={quote(experiment_id)}", OURS_NAME_CELL),
            ("runs page", "mlflow"): (mlflow_url({}), MLFLOW_NAME_CELL),
            ("filtered", "ours"): (f"{ours}/?" + urlencode({"experiment": experiment_id, "filter": FILTER},
                                                           quote_via=quote), OURS_NAME_CELL),
            ("filtered", "mlflow"): (mlflow_url({"searchFilter": FILTER}), MLFLOW_NAME_CELL)}


def load_once(browser, url: str, cells: str, figures: bool) -> tuple[float, float | None]:
    """(seconds to the first rows, seconds to the review figures or None) of one load in a fresh context."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
        rows = page.wait_for_function(ROWS_SHOWN, arg=[cells, FIRST_ROWS], polling="raf",
                                      timeout=TIMEOUT_MS).json_value() / 1000
        drawn = None
        if figures:
            drawn = page.wait_for_function(FIGURES_DRAWN, polling="raf", timeout=TIMEOUT_MS).json_value() / 1000
        return rows, drawn
    finally:
        context.close()


def measure(urls: dict, loads: int) -> tuple[dict, dict]:
    """{key: [seconds to rows]}, {key: [seconds to figures]} (ours only), in rounds after one warm-up load each."""
    from playwright.sync_api import sync_playwright
    rows = {key: [] for key in urls}
    figures = {key: [] for key in urls if key[1] == "ours"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for key, (url, cells) in urls.items():
            first, _ = load_once(browser, url, cells, figures=False)
            print(f"  warm-up {key[0]} ({key[1]}): {first:.2f} s  {url}", flush=True)
        for r in range(loads):
            for key, (url, cells) in urls.items():
                shown, drawn = load_once(browser, url, cells, figures=key in figures)
                rows[key].append(shown)
                if drawn is not None:
                    figures[key].append(drawn)
            print(f"  round {r + 1}: " + "   ".join(f"{k[0]} ({k[1]}) {t[-1]:.2f}" for k, t in rows.items()),
                  flush=True)
        browser.close()
    return rows, figures


def worker_memory(master: subprocess.Popen) -> list[tuple[int, int, int]]:
    """(pid, VmHWM kB, VmRSS kB) of each gunicorn worker: the children of the master process."""
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    out = []
    for pid in map(int, children):
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        out.append((pid, int(status["VmHWM"].split()[0]), int(status["VmRSS"].split()[0])))
    return out


def run_backend(name: str, code: Path, store_uri: str, root: Path, experiment_id: str, loads: int) -> tuple:
    procs = []
    log = open(root / f"servers-{name}.log", "w")
    try:
        if name == "sqlite":
            dash_uri = store_uri
            ui, ui_url = start_mlflow_ui(store_uri, log)
        else:
            ui, ui_url = start_mlflow_server(root, store_uri)  # its own UI is MLflow's page
            dash_uri = ui_url
        procs.append(ui)
        with tempfile.TemporaryDirectory(prefix="runs-page-cache-") as cache:
            dash, dash_url = start_dashboard(code, dash_uri, Path(cache), log)
            procs.append(dash)
            print(f"{name}: ours at {dash_url} (store {dash_uri}), MLflow's at {ui_url}", flush=True)
            rows, figures = measure(pages(dash_url, ui_url, experiment_id), loads)
            memory = worker_memory(dash)
    finally:
        stop(procs)
    return rows, figures, memory


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", help="a bulk_store.py store to reuse (topped up to --runs); default: a temporary one")
    p.add_argument("--runs", type=int, default=10_000, help="runs in the store (default %(default)s)")
    p.add_argument("--loads", type=int, default=5, help="timed loads of each page (default %(default)s)")
    p.add_argument("--no-server", action="store_true", help="SQLite only, not through mlflow server")
    p.add_argument("--code", default=str(REPO), help="the source tree whose dashboard to serve (default: this one)")
    args = p.parse_args(argv)
    code = Path(args.code).resolve()
    if not (code / "dashboard" / "serve.py").is_file():
        p.error(f"--code {code}: no dashboard/serve.py there; give a checkout of this repository")
    with tempfile.TemporaryDirectory(prefix="runs-page-load-") as tmp:
        root = Path(args.store or tmp)
        root.mkdir(parents=True, exist_ok=True)
        from mlflow.tracking import MlflowClient
        uri = bulk_store.sqlite_uri(root)
        client = MlflowClient(uri)
        k = len(client.search_experiments(filter_string=f"name LIKE '{bulk_store.PREFIX}%'")) if args.store else 0
        bulk_store.main(["--store", str(root), "--runs", str(args.runs)] + (["--experiments", str(k)] if k else []))
        exp = client.get_experiment_by_name(bulk_store.experiment_names(1)[0])
        k = len(client.search_experiments(filter_string=f"name LIKE '{bulk_store.PREFIX}%'"))
        shown = sum(1 for i in range(args.runs) if bulk_store.experiment_of(i, k) == 0)
        print(f"experiment {exp.name} (id {exp.experiment_id}): {shown} of the {args.runs} runs\n", flush=True)
        results = {}
        for backend in ("sqlite",) + (() if args.no_server else ("server",)):
            results[backend] = run_backend(backend, code, uri, Path(tmp), exp.experiment_id, args.loads)
    print(f"\n{args.runs} runs in the store, {shown} in the experiment shown; seconds to the first {FIRST_ROWS} rows, "
          f"median of {args.loads} (goal: ours at most 0.5x MLflow's)")
    print(f"{'store':>7} {'backend':<8} {'page':<10} {'ours':>7} {'MLflow':>7} {'ratio':>6}   ours, MLflow: min-max")
    for backend, (rows, _, _) in results.items():
        for page in ("runs page", "filtered"):
            ours, theirs = (statistics.median(rows[(page, who)]) for who in ("ours", "mlflow"))
            spread = ", ".join(f"{min(rows[(page, who)]):.2f}-{max(rows[(page, who)]):.2f}" for who in ("ours", "mlflow"))
            print(f"{args.runs:>7} {backend:<8} {page:<10} {ours:7.2f} {theirs:7.2f} {ours / theirs:5.2f}x   {spread}")
    print(f"\nours: seconds to the review figures (#runs-parallel, #runs-heatmap drawn with a trace), warm, median of {args.loads};"
          f" gunicorn workers' memory after the loads")
    for backend, (_, figures, memory) in results.items():
        drawn = "   ".join(f"{page} {statistics.median(t):.2f} s" for (page, _), t in figures.items())
        mem = ", ".join(f"pid {pid}: peak {hwm / 1024:.0f} MiB, now {rss / 1024:.0f} MiB" for pid, hwm, rss in memory)
        print(f"{backend:<8} {drawn}   workers: {mem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
