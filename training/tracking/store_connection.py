"""Talking to the MLflow store when it may be busy or gone: reachability, retried writes, a bounded wait.

SQLite writes retry on "database is locked", so several trainers can share the
default store.  A tracking server that goes away mid-run is retried with backoff
for a bounded time, MNISTLAB_TRACKING_RETRY_SECONDS per write (default 60), and
then ends the trainer with one TrackingLostError line; what the runs logged up to
then stays in the server's store.

Torch-free, so the run lifecycle and the store migration import it without the models.
"""
import os
import random
import sqlite3
import time

from training.engine import interrupt
from training.errors import UserError
from training.location import is_server, tracking_uri

DEFAULT_RETRY_SECONDS = 60.0
RETRY_ENV = "MNISTLAB_TRACKING_RETRY_SECONDS"
# After Ctrl-C, ending the open runs waits this long at most on a store that does not answer.
STOP_BUDGET = 5.0


class TrackingLostError(UserError):
    """The tracking server stopped answering mid-run and kept not answering for the whole retry budget."""


def retry_seconds() -> float:
    """How long one write keeps retrying a store that does not answer: MNISTLAB_TRACKING_RETRY_SECONDS, default 60."""
    raw = os.environ.get(RETRY_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_RETRY_SECONDS
    except ValueError:
        raise UserError(f"{RETRY_ENV} must be a number of seconds, not {raw!r}") from None


def check_reachable(uri: str) -> None:
    """Fail in seconds, before any training, when a tracking server is down (MLflow itself retries for minutes)."""
    if not is_server(uri):
        return
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10)
    except urllib.error.HTTPError:
        return  # it answered: a server is there, even if /health is not its page
    except OSError as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it, "
                        f"or unset MLFLOW_TRACKING_URI to use the local store") from None


def lost_connection(e: Exception) -> bool:
    """The server did not answer (refused, reset, timed out, MLflow's own retries exhausted)."""
    text = str(e).lower()
    # A server killed mid-response breaks the connection rather than refusing it (IncompleteRead).
    broken = ("refused", "broken", "reset", "aborted", "remote end closed", "incompleteread")
    return (isinstance(e, (ConnectionError, TimeoutError)) or "Connection" in type(e).__name__
            or "max retries" in text or "timed out" in text
            or "connection" in text and any(word in text for word in broken))


def retry(fn, *args, budget: float | None = None, **kwargs):
    """Call an MLflow write, retrying with backoff on transient store errors (locked SQLite, a lost server).

    Retries for at most `budget` seconds (default retry_seconds()); budget=0 tries once.  A server still
    unreachable after that raises TrackingLostError; other errors propagate as they are.  A write with
    the default budget stops waiting on a lost server as soon as Ctrl-C or SIGTERM asks to stop
    (KeyboardInterrupt); cleanup writes pass their own budget and are not cut short.
    """
    stoppable = budget is None
    budget = retry_seconds() if budget is None else budget
    start, attempt = time.monotonic(), 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            locked = "locked" in str(e) or "busy" in str(e) or isinstance(e, sqlite3.OperationalError)
            lost = lost_connection(e)
            elapsed = time.monotonic() - start
            if lost and stoppable and interrupt.requested():
                raise KeyboardInterrupt
            if not (locked or lost) or elapsed >= budget:
                if lost:
                    raise TrackingLostError(f"lost the MLflow tracking server at {tracking_uri()} mid-run "
                                            f"(retried for {elapsed:.0f} s)") from e
                raise
            pause = min(budget - elapsed, min(10.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))
            end = time.monotonic() + pause
            while time.monotonic() < end and not (stoppable and interrupt.requested()):
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))  # a signal only sets a flag: look often
            attempt += 1
