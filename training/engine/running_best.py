"""The running best test accuracy, logged every epoch beside test_acc (contract BEST_TEST_ACC, BEST_EPOCH).

Both training paths (the engine's MlflowSink and your own loop's logged_run) add it as they log an epoch;
training.backfill_summaries adds the whole series to runs logged before it existed.
"""
import math

from training import contract as C


class RunningBest:
    """Feed it each epoch's metrics in order; it answers the best-so-far metrics to log with them."""

    def __init__(self):
        self.value: float | None = None
        self.epoch: int | None = None

    def update(self, epoch: int, metrics: dict[str, float]) -> dict[str, float]:
        """{best_test_acc, best_epoch} after this epoch; {} until a finite test_acc has been seen.

        Ties keep the first epoch that reached the value, as the dashboard's history-based fallback does."""
        acc = metrics.get(C.TEST_ACC)
        if acc is not None and math.isfinite(acc) and (self.value is None or acc > self.value):
            self.value, self.epoch = float(acc), int(epoch)
        return {} if self.value is None else {C.BEST_TEST_ACC: self.value, C.BEST_EPOCH: float(self.epoch)}


def series(history: list[tuple[int, float]]) -> list[tuple[int, dict[str, float]]]:
    """(step, best metrics) for a test_acc history of (step, value), as RunningBest would have logged it."""
    best, out = RunningBest(), []
    for step, value in sorted(history):
        if extra := best.update(step, {C.TEST_ACC: value}):
            out.append((step, extra))
    return out
