"""Writes that leave the training thread: one writer thread per sink, in order, batched.

The training thread `put`s each epoch's write and goes on; the writer thread takes every write queued while it
holds the first (HOLD) and then until a short pause, and hands them to `write` in one call, so the store gets
fewer, larger requests.  A write
that fails is kept and raised on the training thread at its next `put` or `flush`, once.  After a lost
tracking server (or a stop asked while waiting on one) the writes still queued are dropped: each would
wait out its own retries.

Nothing that reached the writer is lost when a run ends however it ends: `flush` waits until every
queued write is in the store, and training.tracking.mlflow_sink calls it before any run is ended.  A
KeyboardInterrupt (Ctrl-C, SIGTERM) raised while `flush` waits leaves the writer writing.
"""
import queue
import threading
import time
from typing import Callable, Generic, TypeVar

from training.tracking.store_connection import TrackingLostError

Job = TypeVar("Job")
# A grid reports its K models' epochs within milliseconds of each other; waiting for a pause this long
# hands them to one `write`, which sends each run's queued epochs in one log_batch instead of one per
# epoch when the store falls behind.  A steady stream is still written at least every COALESCE_LIMIT seconds.
COALESCE_PAUSE = 0.005
COALESCE_LIMIT = 0.1
# Each MlflowClient call costs some 4-8 ms of CPU whatever it carries (two commits per log_batch on SQLite), and
# with the C kernel on both cores that CPU comes out of training.  So the writer also holds its first job this
# long before the pause rule starts: a fast grid's consecutive epochs then share one log_batch (and one
# log_artifacts) per run.  A live dashboard sees an epoch at most this much later; `flush` cuts the hold short,
# so the end of a run waits for nothing.
HOLD = 1.0
_STOP = object()


class BackgroundWriter(Generic[Job]):
    def __init__(self, write: Callable[[list[Job]], None], name: str = "mlflow-writer", hold: float = HOLD):
        self._write, self._name, self._hold = write, name, hold
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lost = False
        self._hurry = threading.Event()  # someone waits in flush: write what is queued without holding

    def put(self, job: Job) -> None:
        """Queue one write; first raise the error of an earlier write, if one failed."""
        self._raise_error()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put(job)

    def flush(self, raise_error: bool = True) -> None:
        """Wait until every queued write is done; raise the error of one that failed (or keep it for later)."""
        self._hurry.set()
        try:
            self._queue.join()
        finally:
            self._hurry.clear()
        if raise_error:
            self._raise_error()

    def close(self, raise_error: bool = True) -> None:
        """Flush, then let the thread end; a later `put` starts another."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if raise_error:
            self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _loop(self) -> None:
        while True:
            jobs = self._collect()
            stop = any(job is _STOP for job in jobs)
            try:
                work = [job for job in jobs if job is not _STOP]
                if work and not self._lost:
                    self._write(work)
            except (TrackingLostError, KeyboardInterrupt) as e:  # the latter: a stop asked while the server is lost
                self._lost = True
                self._error = self._error or e
            except Exception as e:  # kept for the training thread, which decides what a failure means
                self._error = self._error or e
            finally:
                for _ in jobs:
                    self._queue.task_done()
            if stop:
                return

    def _collect(self) -> list:
        """The next call's jobs: the first to arrive, everything queued while the hold runs (unless someone flushes
        or the writer is told to stop), then everything until a pause of COALESCE_PAUSE, COALESCE_LIMIT at most."""
        jobs = [self._queue.get()]
        hold_until = time.monotonic() + self._hold
        while jobs[-1] is not _STOP and not self._hurry.is_set() and time.monotonic() < hold_until:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, min(COALESCE_PAUSE, hold_until - time.monotonic()))))
            except queue.Empty:
                continue
        deadline = time.monotonic() + COALESCE_LIMIT
        while jobs[-1] is not _STOP:  # everything queued meanwhile, and until a pause, goes in the same call
            try:
                jobs.append(self._queue.get(timeout=max(0.0, min(COALESCE_PAUSE, deadline - time.monotonic()))))
            except queue.Empty:
                break
        return jobs
