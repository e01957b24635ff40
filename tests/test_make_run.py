"""`make run` as a new user meets it: the dashboard answers within seconds while a grid trains behind it,
its runs turn FINISHED on the runs page without a reload, Ctrl-C stops everything and leaves no process
behind, and the next `make run` resumes the training without retraining what finished.

A small grid stands in for training/grids/seeds.yaml (`make run GRID=...`), in an empty temp store.
"""
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard import launch
from tests.conftest import REPO, all_runs, assert_no_dash_errors, free_port, sqlite_uri
from training import contract as C

ANSWER_S = 20  # from `make run` to the dashboard answering (the bound, install and data check included)
STOP_S = 60  # from Ctrl-C to every process gone (launch.STOP_S, then SIGKILL)
# 2 x 20 epochs of 10,000 images: several seconds with the C kernel, so the page sees the runs RUNNING.
LIVE_GRID = """experiment: live
base: {sizes: [784, 20, 10], activation: sigmoid, loss: mse, lr: 3.0, batch_size: 20, train_size: 10000, epochs: 20}
runs:
  - {seed: 0}
  - {seed: 1}
"""
# Cohorts train longest first (in optimizer steps): "short" (16,000 steps, about 1.5 s) finishes, then "long"
# (15,000 steps over 1,500 evaluated epochs, about 20 s) is still training when Ctrl-C comes. At 40 epochs
# "long" took 0.7 s, and CI once saw it FINISHED before the Ctrl-C landed.
TWO_COHORTS = """experiment: resume
base: {sizes: [784, 20, 10], activation: sigmoid, loss: mse, lr: 3.0, train_size: 2000}
runs:
  - {run_name: short, batch_size: 10, epochs: 80}
  - {run_name: long, batch_size: 200, epochs: 1500}
"""


class MakeRun:
    """`make run GRID=... PORT=...` in a process group of its own, as a terminal runs it; output to a file."""

    def __init__(self, tmp_path: Path, grid: Path, uri: str, name: str = "make"):
        self.port, self.out = free_port(), tmp_path / f"{name}.out"
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
        self.started = time.monotonic()
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(["make", "--no-print-directory", "run", f"GRID={grid}", f"PORT={self.port}"],
                                         cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.seen: dict[int, str] = {}

    def text(self) -> str:
        return self.out.read_text()

    def wait_for(self, needle: str, timeout: float) -> float:
        """Seconds since `make run` until its output holds `needle`."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"make exited ({self.proc.returncode}):\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout:.0f} s:\n{self.text()}"
            time.sleep(0.2)
        return time.monotonic() - self.started

    def remember_processes(self) -> None:
        """Every process started under make so far (the launcher's children sit in process groups of their own)."""
        self.seen.update(descendants(self.proc.pid))

    def ctrl_c(self) -> float:
        """SIGINT to make's process group, as Ctrl-C in its terminal; returns seconds until make exited."""
        self.remember_processes()
        start = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=STOP_S + 30)
        return time.monotonic() - start

    def survivors(self) -> list[str]:
        return [f"{pid} {self.seen[pid]}" for pid in self.seen if _start_time(pid) == self.seen[pid].split()[0]]

    def cleanup(self) -> None:
        for pid in [*self.seen, self.proc.pid]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(timeout=30)


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from the state on: the name may hold spaces


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # starttime: tells a process from a later one with its pid


def descendants(root: int) -> dict[int, str]:
    """{pid: "starttime cmdline"} of every process below root."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))):
            parents[int(entry)] = int(fields[1])
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found[pid] = f"{_start_time(pid)} {cmd[:120]}"
                frontier.append(pid)
    return found


def _zombies(root: int) -> list[str]:
    return [f"{pid} {what}" for pid, what in descendants(root).items() if (_stat(pid) or ["?"])[0] == "Z"]


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except Exception:
        return False


def _stopped_cleanly(run: MakeRun, seconds: float) -> None:
    assert seconds < STOP_S, f"Ctrl-C took {seconds:.0f} s"
    assert run.survivors() == [], run.survivors()
    assert "Traceback" not in run.text(), run.text()
    assert not _answers(run.url)


def _statuses(uri: str, experiment: str) -> dict[str, str]:
    return {r.info.run_name: r.info.status for r in all_runs(uri, experiment)}


@pytest.mark.slow
@pytest.mark.browser
def test_make_run_serves_at_once_shows_runs_finish_live_and_a_rerun_trains_nothing(page, tmp_path):
    grid, uri = tmp_path / "live.yaml", sqlite_uri(tmp_path)
    grid.write_text(LIVE_GRID)
    run = MakeRun(tmp_path, grid, uri)
    try:
        answered = run.wait_for("Dashboard: " + run.url, ANSWER_S + 60)  # checked last: the rest is worth knowing
        assert f"its log: {tmp_path / 'training.log'}" in run.text()
        page.goto(run.url)
        page.wait_for_selector(".status-RUNNING", timeout=30000)  # the grid's parent, then its children
        page.evaluate("window.notReloaded = true")
        page.wait_for_function("document.querySelectorAll('.ag-row .status-FINISHED').length === 3", timeout=300000)
        assert page.evaluate("window.notReloaded === true"), "the page reloaded"
        assert page.locator(".status-RUNNING").count() == 0
        assert_no_dash_errors(page)
        run.wait_for("training finished: grid live", 60)
        time.sleep(1)
        assert _zombies(run.proc.pid) == [], "a finished grid is left unreaped while the dashboard serves"
        _stopped_cleanly(run, run.ctrl_c())
    finally:
        run.cleanup()
    finished = {r.info.run_id for r in all_runs(uri, "live")}
    assert len(finished) == 3 and set(_statuses(uri, "live").values()) == {C.STATUS_FINISHED}

    again = MakeRun(tmp_path, grid, uri, "again")
    try:
        again.wait_for("training finished: ", ANSWER_S + 60)
        assert "all 2 configs already FINISHED; nothing to train" in again.text()
        assert "nothing to train" in (tmp_path / "training.log").read_text().rsplit("=== ", 1)[-1]
        again.wait_for("Dashboard: ", 60)
        _stopped_cleanly(again, again.ctrl_c())
    finally:
        again.cleanup()
    assert {r.info.run_id for r in all_runs(uri, "live")} == finished  # no new parent, no new child
    assert answered < ANSWER_S, f"the dashboard took {answered:.1f} s to answer"


@pytest.mark.slow
def test_ctrl_c_mid_training_ends_open_runs_killed_and_the_next_make_run_trains_only_those(tmp_path):
    grid, uri = tmp_path / "resume.yaml", sqlite_uri(tmp_path)
    grid.write_text(TWO_COHORTS)
    run = MakeRun(tmp_path, grid, uri)
    try:
        run.wait_for("Dashboard: ", 120)
        deadline = time.monotonic() + 300
        while _statuses(uri, "resume") != {"short": C.STATUS_FINISHED, "long": C.STATUS_RUNNING,
                                           "grid resume": C.STATUS_RUNNING}:
            assert time.monotonic() < deadline, _statuses(uri, "resume")
            time.sleep(0.5)
        _stopped_cleanly(run, run.ctrl_c())
    finally:
        run.cleanup()
    assert _statuses(uri, "resume") == {"short": C.STATUS_FINISHED, "long": C.STATUS_KILLED,
                                        "grid resume": C.STATUS_KILLED}
    lines = run.text().splitlines()
    stopped = [s for s in lines if s.startswith("training stopped: ")]
    assert len(stopped) == 1 and "ended KILLED" in stopped[0] and "`make run` again resumes it" in stopped[0], lines

    again = MakeRun(tmp_path, grid, uri, "again")
    try:
        again.wait_for("1 to train, 1 already FINISHED", 120)
        deadline = time.monotonic() + 120
        while sorted(r.info.run_name for r in all_runs(uri, "resume")).count("long") < 2:  # its new run has started
            assert time.monotonic() < deadline, run.text()
            time.sleep(0.5)
        _stopped_cleanly(again, again.ctrl_c())
    finally:
        again.cleanup()
    names = sorted(r.info.run_name for r in all_runs(uri, "resume"))
    assert names == ["grid resume", "grid resume", "long", "long", "short"]  # "short" was not trained again


@pytest.mark.slow
def test_a_grid_that_fails_leaves_the_dashboard_serving_and_says_so_in_one_line(tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text("experiment: bad\nbase: {sizes: [784, 20, 10]}\nruns:\n  - {lr: -1}\n")
    run = MakeRun(tmp_path, grid, sqlite_uri(tmp_path))
    try:
        run.wait_for("Dashboard: ", 120)
        run.wait_for("error: training failed", 60)
        (line,) = [s for s in run.text().splitlines() if "training failed" in s]
        assert "(exit 2)" in line and "lr=-1.0 must be > 0" in line and "the dashboard keeps serving" in line, line
        assert f"full log: {tmp_path / 'training.log'}" in line
        time.sleep(1)
        assert _answers(run.url) and run.proc.poll() is None
        _stopped_cleanly(run, run.ctrl_c())
    finally:
        run.cleanup()


# ---- the launcher's parts, without processes ------------------------------------------------

def test_the_training_log_sits_beside_a_sqlite_store_and_in_mlflow_runs_for_a_server(tmp_path):
    assert launch.training_log(sqlite_uri(tmp_path)) == tmp_path.resolve() / "training.log"
    assert launch.training_log("http://mlflow-host:5000") == REPO / "mlflow_runs" / "training.log"


def test_how_the_grid_ended_is_one_line(tmp_path):
    log = tmp_path / "training.log"
    bar = "\rgrid g:  50%|#####     | 1/2 [00:01<00:01]\rgrid g: 100%|##########| 2/2 [00:02<00:00]\n"
    finished = "g.yaml: 2 to train, 0 already FINISHED\n" + bar + "table\ngrid g: parent run abc, 2 trained in 3s\n"
    nothing = "g.yaml: all 2 configs already FINISHED; nothing to train\ntable row\n"
    killed = "g.yaml: 2 to train, 0 already FINISHED\n" + bar + "interrupted: open runs ended KILLED, finished ones kept\n"
    failed = bar + "table\nerror: 1 config(s) did not finish: lr=30\n"
    cases = [
        (launch.grid_outcome(0, finished, log), "training finished: grid g: parent run abc, 2 trained in 3s"),
        (launch.grid_outcome(0, nothing, log), "training finished: g.yaml: all 2 configs already FINISHED"),
        (launch.grid_outcome(-2, nothing, log, asked=True), "training finished: g.yaml: all 2"),
        (launch.grid_outcome(130, killed, log, asked=True), "training stopped: interrupted: open runs ended KILLED"),
        (launch.grid_outcome(-2, "", log, asked=True), "training stopped: before any run started"),
        (launch.grid_outcome(1, failed, log), "error: training failed (exit 1): 1 config(s) did not finish: lr=30;"),
        (launch.grid_outcome(-9, failed, log), "error: training was killed (signal 9)"),
    ]
    for line, start in cases:
        assert line.startswith(start) and "\n" not in line and str(log) in line, line


def test_a_missing_grid_file_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dashboard.launch", str(tmp_path / "no.yaml"),
                           "--port", str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {tmp_path / 'no.yaml'}: no such grid file (make run GRID=path/to/grid.yaml)\n"
