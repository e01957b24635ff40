"""Screenshots of the dashboard's pages in headless Chromium, for the README and for review.

    python -m dashboard.screenshots OUT_DIR [--url http://127.0.0.1:8050] [--start /?experiment=<id>]
                                            [--path '/runs/{run}' --path '/runs/{run}/neurons' ...] [--dark]
                                            [--mlflow-ui http://127.0.0.1:5000]

Without --url it serves the dashboard itself over MLFLOW_TRACKING_URI (or the default store) on a
free loopback port.  It always shoots the runs page (`--start`, default `/`), then ticks its first
three runs and follows "Compare" (so the compare shot is a real link from the runs page), then every
--path given; `{run}` in a path stands for the first run listed on the runs page.  With --mlflow-ui
(an `mlflow ui` over the same store) it also shoots {run}'s page with its MLflow link and the MLflow
page that link opens (run_page_mlflow_link.png, mlflow_ui_run.png).
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
SETTLE_MS = 800  # after the last figure draws: lets Plotly finish transitions before the shot
MLFLOW_WAIT_MS = 60000  # MLflow's UI loads its run page in several requests


@contextmanager
def served(url: str | None):
    """Yield a base URL: the given one, or a dashboard this process starts (and stops) itself."""
    if url:
        yield url.rstrip("/")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--port", str(port)], cwd=repo,
                            env={**os.environ, "PYTHONPATH": str(repo)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2)
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit(f"error: the dashboard did not start on {base}")
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def settle(page) -> None:
    """Wait until Dash has no callback in flight and every figure on the page has drawn."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=30000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.dash-graph')].every(g => g.querySelector('.main-svg'))", timeout=30000)
    page.wait_for_timeout(SETTLE_MS)


def file_name(path: str) -> str:
    """A readable file name for a URL path: / -> runs, /runs/<id>?epoch=3 -> runs_<id>_epoch_3."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", path.split("?runs=")[0] if path.startswith("/compare") else path).strip("_")
    return name or "runs"


def shoot(page, base: str, path: str, out: Path, name: str | None = None) -> Path:
    page.goto(base + path)
    settle(page)
    target = out / f"{name or file_name(path)}.png"
    page.screenshot(path=str(target), full_page=True)
    return target


def shoot_mlflow_link(page, base: str, run_id: str, out: Path, suffix: str = "") -> list[Path]:
    """Our run page with its "Open in MLflow" link, then the MLflow page the link opens, description expanded."""
    page.goto(f"{base}/runs/{run_id}")
    settle(page)
    link = page.locator("#run-mlflow-link")
    if not link.count():
        raise SystemExit("error: the run page has no MLflow link; the dashboard needs MLFLOW_UI_URL")
    ours = out / f"run_page_mlflow_link{suffix}.png"
    page.screenshot(path=str(ours))  # the top of the page, where the link is
    with page.context.expect_page() as opened:
        link.click()
    theirs = opened.value
    theirs.set_viewport_size(VIEWPORT)
    expand = theirs.get_by_role("button", name="Expand description")
    expand.wait_for(timeout=MLFLOW_WAIT_MS)
    expand.click()
    theirs.wait_for_timeout(3000)  # the assistant panel opens late; closed, the run page gets the width
    close = theirs.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.click()
    theirs.get_by_text("Description", exact=True).scroll_into_view_if_needed()
    theirs.wait_for_timeout(SETTLE_MS)
    target = out / f"mlflow_ui_run{suffix}.png"
    theirs.screenshot(path=str(target))
    theirs.close()
    return [ours, target]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dashboard.screenshots", description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--url", help="a running dashboard (default: start one over MLFLOW_TRACKING_URI)")
    p.add_argument("--start", default="/", help="the runs page URL path, e.g. /?experiment=3 (default %(default)s)")
    p.add_argument("--path", action="append", default=[],
                   help="another page to shoot; {run} is the first run on the runs page, e.g. '/runs/{run}'")
    p.add_argument("--run", help="the run {run} stands for (default: the first run on the runs page)")
    p.add_argument("--dark", action="store_true", help="shoot in the dark theme")
    p.add_argument("--mlflow-ui", metavar="URL", help="an MLflow UI over the same store: shoot the link to it")
    args = p.parse_args(argv)
    if args.mlflow_ui:
        from dashboard.read.mlflow_links import ENV_UI_URL
        os.environ[ENV_UI_URL] = args.mlflow_ui  # for the dashboard this command serves
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing; install Debian's chromium package (make browser)", file=sys.stderr)
        return 1
    suffix = "_dark" if args.dark else ""
    with served(args.url) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        if args.dark:  # the theme is a localStorage preference: set it before the app reads it
            page.add_init_script("localStorage.setItem('app-theme', JSON.stringify('dark'))")
        print(shoot(page, base, args.start, out, "runs" + suffix))
        links = page.locator(".run-link:not(.run-link-parent)")
        first_run = args.run or ((links.first.get_attribute("href") or "").rsplit("/", 1)[-1]
                                 if links.count() else "")
        boxes = page.locator(".ag-row:not(:has(.run-link-parent)) .ag-checkbox-input")  # runs, not grid parents
        for i in range(min(3, boxes.count())):
            boxes.nth(i).check()
        settle(page)  # the Compare link's href is set by a callback on the selection
        href = page.locator("#runs-compare").get_attribute("href") or "/compare"
        print(shoot(page, base, href, out, "compare" + suffix))
        for path in args.path:
            if "{run}" in path and not first_run:
                print(f"skipped {path}: the runs page lists no run", file=sys.stderr)
                continue
            name = file_name(path.replace("{run}", "run")) + suffix  # stable names for the README
            print(shoot(page, base, path.replace("{run}", first_run), out, name))
        if args.mlflow_ui and first_run:
            print(*shoot_mlflow_link(page, base, first_run, out, suffix), sep="\n")
        browser.close()
    for e in errors:
        print(f"console error: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
