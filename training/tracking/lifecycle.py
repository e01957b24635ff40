"""One run lifecycle: every MLflow run a process opens ends FINISHED, FAILED with the error, or KILLED.

    runs = OpenRuns(client)
    runs.add(run_id, describe)            # as each run is created; describe(status, reason) -> its description
    with RunLifecycle(runs):
        ...train, logging to the runs...  # any loop: the engine's, or a plain PyTorch one

Leaving the block normally ends the runs still open FINISHED.  An exception ends
them FAILED with "crashed: <Type>: <message>" as their failure reason and goes on
up.  Ctrl-C or SIGTERM (a KeyboardInterrupt; see training.engine.interrupt) ends them
KILLED, waiting at most STOP_BUDGET on the store, and raises `Interrupted`,
which says whether the store took it.  A lost tracking server abandons them:
one quick try, since every further write would wait out its retries.

However a run ends, it ends here, so this is where it gets its description
(MLflow's `mlflow.note.content`): what its `describe` says about its status and reason.
"""
import sys
from dataclasses import dataclass
from typing import Callable

from training import contract as C
from training.tracking.store_connection import STOP_BUDGET, TrackingLostError, retry

INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
LOST = "lost the MLflow tracking server mid-run"
CRASH_TEXT = 300  # characters of the error kept in the failure reason


def crash_reason(error: BaseException) -> str:
    return f"crashed: {type(error).__name__}: {str(error)[:CRASH_TEXT]}"


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended, as the store has it."""
    run_id: str
    status: str

    @property
    def finished(self) -> bool:
        return self.status == C.STATUS_FINISHED


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the runs; `ended` says whether the store took their KILLED status."""

    def __init__(self, ended: bool):
        super().__init__(ended)
        self.ended = ended


Describe = Callable[[str, str | None], str]  # (status, failure reason or None) -> the run's description


class OpenRuns:
    """The MLflow runs a process has started and not yet ended, in the order they were added."""

    def __init__(self, client):
        self.client = client
        self._open: dict[str, Describe | None] = {}  # an ordered set, with each run's describer

    def add(self, run_id: str, describe: Describe | None = None) -> None:
        self._open[run_id] = describe

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._open

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self):
        return iter(list(self._open))

    def end(self, run_id: str, status: str = C.STATUS_FINISHED, reason: str | None = None,
            budget: float | None = None) -> None:
        """End one run (a no-op if it is not open), with `reason` as its failure reason tag and its description."""
        if run_id not in self._open:
            return
        # Not at the top: MLflow takes seconds to import, and `grid --ray` imports this module before reading the file.
        from mlflow.entities import RunTag
        tags = [RunTag(C.TAG_FAILURE_REASON, reason)] if reason else []
        if (describe := self._open[run_id]) is not None:
            tags.append(RunTag(C.TAG_NOTE, _description(describe, status, reason)))
        if tags:
            retry(self.client.log_batch, run_id, tags=tags, budget=budget)
        retry(self.client.set_terminated, run_id, status, budget=budget)
        del self._open[run_id]

    def end_all(self, status: str, reason: str | None = None, budget: float | None = None) -> bool:
        """End every open run; False if the store stopped answering first.

        Once the server is found gone, stop: each further run would wait out the budget.
        """
        for run_id in self:
            try:
                self.end(run_id, status, reason, budget=budget)
            except TrackingLostError:
                return False
        return True

    def abandon(self) -> None:
        """After the server was lost: one quick try to end the open runs FAILED, giving up at the first miss.

        If the server is still down they stay RUNNING in its store, with every epoch they logged.
        """
        try:
            self.end_all(C.STATUS_FAILED, LOST, budget=0)
        except Exception:
            pass  # already failing with the clearer error


def _description(describe: Describe, status: str, reason: str | None) -> str:
    """The run's description; a describer's bug must not keep the run from ending, so it is named instead."""
    try:
        return describe(status, reason)
    except Exception as e:
        return f"{status}{f': {reason}' if reason else ''} (no description: {type(e).__name__}: {e})"


class RunLifecycle:
    """Ends the open runs when the block ends, however it ends (see the module docstring).

    interrupted: the failure reason a KILLED run gets (None: no reason tag).
    announce: say on stderr that the runs are being ended KILLED before doing it.
    on_lost: appended to a lost server's one-line error, e.g. how to pick up again.
    stop_budget: seconds that ending the runs KILLED may wait on a store that does not answer.
    """

    def __init__(self, runs: OpenRuns, interrupted: str | None = INTERRUPTED, announce: bool = True,
                 on_lost: str | None = None, stop_budget: float = STOP_BUDGET):
        self.runs, self.interrupted, self.announce, self.on_lost = runs, interrupted, announce, on_lost
        self.stop_budget = stop_budget

    def __enter__(self) -> OpenRuns:
        return self.runs

    def __exit__(self, kind, error, tb) -> bool:
        if kind is None:
            try:
                for run_id in self.runs:
                    self.runs.end(run_id, C.STATUS_FINISHED)
            except TrackingLostError as lost:
                self._abandon(lost)
        elif issubclass(kind, KeyboardInterrupt):
            self._stop()
        elif issubclass(kind, TrackingLostError):
            self._abandon(error)
        else:  # KILLED means a person stopped it; a crash is a failure
            self.runs.end_all(C.STATUS_FAILED, crash_reason(error))
        return False

    def _abandon(self, lost: TrackingLostError):
        self.runs.abandon()
        if self.on_lost:
            raise TrackingLostError(f"{lost}; {self.on_lost}") from None  # one line, exit 2
        raise lost

    def _stop(self):
        n = len(self.runs)
        if self.announce and n:
            what = "the run" if n == 1 else f"{n} open run(s)"
            print(f"\nstopping: ending {what} KILLED (Ctrl-C again to quit at once)", file=sys.stderr)
        raise Interrupted(self.runs.end_all(C.STATUS_KILLED, self.interrupted, budget=self.stop_budget)) from None
