"""`make run`: the dashboard at once, and a grid (the default runs) training behind it.

    python -m dashboard.launch [GRID] [--host 127.0.0.1] [--port 8050] [--workers 2]

The grid and gunicorn each run in a process group of their own, the grid's output in a log file
beside the store, so a Ctrl-C in the terminal reaches only this launcher.  It then asks each child
once: the grid ends its open runs KILLED (running this again resumes it: FINISHED configs are
skipped) and gunicorn shuts down; a second Ctrl-C asks again, and whatever is still alive after
STOP_S is killed.  If the grid fails, the dashboard keeps serving and one line says so.

It imports neither torch nor Dash: it only starts and watches processes.
"""
import argparse
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from dashboard import serve
from training.location import DEFAULT_STORE, REPO_ROOT, tracking_uri

DEFAULT_GRID = "training/grids/seeds.yaml"
POLL_S = 0.2
# The URL is printed once the runs page has something to follow live: the grid's progress bar starts
# after its parent run exists, and "nothing to train" means nothing will appear.  A grid slower than
# this to get there (a first download of MNIST) does not hold the URL back.
READY_S = 90
STOP_S = 60  # what a Ctrl-C waits for the grid to end its runs and gunicorn to exit, before SIGKILL
UNDER_WAY = re.compile(r"grid .+?:\s+\d+%\||nothing to train")
PLAN = re.compile(r"^.*\d+ to train, \d+ already FINISHED$", re.M)
PR_SET_PDEATHSIG = 1
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def training_log(uri: str) -> Path:
    """Beside a SQLite store's database; in mlflow_runs/ when the store is a tracking server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve().parent / "training.log"
    return DEFAULT_STORE / "training.log"


def _own_group_and_die_with_parent() -> None:
    """Runs in the child before exec: its own process group, and SIGTERM should the launcher die unclean."""
    os.setpgrp()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a killed launcher leaves its children to the user
        pass


def start_grid(grid: str, log: Path) -> tuple[subprocess.Popen, int]:
    """The grid in the background, appending to `log`.  Returns the process and where its output starts."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "5",  # a progress line every 5 s, not 10 a second
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "a") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: python -m training.grid {grid} ===\n")
        out.flush()
        offset = out.tell()
        proc = subprocess.Popen([sys.executable, "-m", "training.grid", grid], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=_own_group_and_die_with_parent)
    return proc, offset


def start_dashboard(host: str, port: int, workers: int) -> subprocess.Popen:
    # Warnings only: gunicorn's boot and shutdown chatter would bury the lines this launcher prints.
    argv = serve.gunicorn_argv(host, port, workers, log_level="warning")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_own_group_and_die_with_parent)


def answers(url: str) -> bool:
    try:
        _NO_PROXY.open(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answered (401 behind a login)
    except OSError:
        return False
    return True


def _lines(text: str) -> list[str]:
    """The log's lines without progress-bar frames."""
    return [s.strip() for s in text.replace("\r", "\n").splitlines() if s.strip() and "%|" not in s]


def grid_outcome(code: int, text: str, log: Path, asked: bool = False) -> str:
    """One line for the terminal on how the grid ended: its exit code, what it printed, and whether we stopped it."""
    lines = _lines(text)
    done = [s for s in lines if "nothing to train" in s or (s.startswith("grid ") and " trained in " in s)]
    if done or code == 0:
        return f"training finished: {done[-1] if done else 'every config FINISHED'} (log: {log})"
    if asked or code == 130:
        said = [s for s in lines if s.startswith("interrupted")]
        return (f"training stopped: {said[-1] if said else 'before any run started'} (log: {log}); "
                f"`make run` again resumes it")
    if code < 0:
        return f"error: training was killed (signal {-code}); the dashboard keeps serving; log: {log}"
    last = lines[-1].removeprefix("error: ") if lines else "no output"
    return f"error: training failed (exit {code}): {last}; the dashboard keeps serving; full log: {log}"


class Signals:
    """Ctrl-C, SIGTERM and a closed terminal, counted: the main loop decides what each one does."""

    def __init__(self):
        self.count = 0
        self.first = None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.count += 1
        self.first = self.first or signum


class Launch:
    def __init__(self, args, log: Path, signals: Signals):
        self.args, self.log, self.signals = args, log, signals
        self.url = f"http://{args.host}:{args.port}/"
        self.dashboard = start_dashboard(args.host, args.port, args.workers)
        self.grid, self.offset = start_grid(args.grid, log)
        self.started = time.monotonic()
        self.announced = self.planned = self.grid_done = False
        print(f"Training {args.grid} in the background; its log: {log}", flush=True)

    def grid_text(self) -> str:
        with open(self.log, errors="replace") as f:
            f.seek(self.offset)
            return f.read()

    def run(self) -> int:
        while self.signals.count == 0:
            if self.dashboard.poll() is not None:
                print(f"error: the dashboard exited (code {self.dashboard.returncode}; see above); "
                      f"stopping the training", file=sys.stderr, flush=True)
                self.stop()
                return 1
            self.watch_grid()
            if not self.announced and self.ready():
                print(f"Dashboard: {self.url} (gunicorn, {self.args.workers} workers); Ctrl-C stops it and the "
                      f"training", flush=True)
                self.announced = True
            time.sleep(POLL_S)
        training = "" if self.grid_done else "the grid ends its open runs KILLED, "
        print(f"\nstopping: {training}the dashboard shuts down", flush=True)
        self.stop()
        return 128 + int(self.signals.first or signal.SIGINT)

    def watch_grid(self) -> None:
        if self.grid_done:
            return
        if not self.planned and (plan := PLAN.search(self.grid_text())):
            print(f"training: {plan.group(0)}; runs appear on the dashboard as they train", flush=True)
            self.planned = True
        if self.grid.poll() is not None:
            self.grid_done = True
            print(grid_outcome(self.grid.returncode, self.grid_text(), self.log), flush=True)

    def ready(self) -> bool:
        grid_ready = self.grid_done or UNDER_WAY.search(self.grid_text()) is not None or \
            time.monotonic() - self.started > READY_S
        return grid_ready and answers(self.url)

    def stop(self) -> None:
        """Ask each child once per signal received, then kill what outlives STOP_S; every child is reaped."""
        children = [p for p in (self.grid, self.dashboard) if p.poll() is None]
        asked, deadline = -1, time.monotonic() + STOP_S
        while any(p.poll() is None for p in children) and time.monotonic() < deadline:
            if asked < self.signals.count:
                asked = self.signals.count
                for p in children:
                    if p.poll() is None:
                        # The grid stops at a safe point on SIGINT.  gunicorn gets SIGTERM: a graceful stop once it
                        # serves, and a silent exit while it still imports the app (SIGINT there is a traceback).
                        p.send_signal(signal.SIGINT if p is self.grid else signal.SIGTERM)
            time.sleep(POLL_S)
        for p in children:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # the group: gunicorn's workers go with their master
                p.wait()
        if not self.grid_done and self.grid in children:
            self.grid_done = True
            print(grid_outcome(self.grid.returncode, self.grid_text(), self.log, asked=True), flush=True)


def main(argv=None) -> int:
    signals = Signals()  # before anything starts: an early Ctrl-C must not leave a child behind
    p = argparse.ArgumentParser(prog="python -m dashboard.launch", description=__doc__.splitlines()[0])
    p.add_argument("grid", nargs="?", default=DEFAULT_GRID, help="the grid file to train (default %(default)s)")
    serve.add_arguments(p)
    p.set_defaults(workers=2)  # one person: two workers, as `make run` has always served
    args = p.parse_args(argv)
    if not Path(args.grid).is_file():
        print(f"error: {args.grid}: no such grid file (make run GRID=path/to/grid.yaml)", file=sys.stderr)
        return 2
    serve.prepare(p, args)
    log = training_log(tracking_uri())
    log.parent.mkdir(parents=True, exist_ok=True)
    if signals.count:
        return 130
    return Launch(args, log, signals).run()


if __name__ == "__main__":
    sys.exit(main())
