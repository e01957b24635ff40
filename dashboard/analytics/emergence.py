"""When a unit appeared: its verdict at every snapshot epoch, read off per-epoch layer statistics.

A unit's emergence epoch is the first snapshot epoch whose verdict is class-selective (see
analytics.neurons for the verdict); None if it never is.  Pure functions of verdict lists.
"""
import numpy as np

CLASS, FEATURE, DEAD = "class", "feature", "dead"
KINDS = (CLASS, FEATURE, DEAD)


def verdict_kind(verdict: str) -> str:
    """'class', 'feature' or 'dead' from a verdict such as 'class-selective (digit 3)'."""
    return verdict.split("-")[0].split(" ")[0]


def emergence_epoch(epochs, verdicts) -> int | None:
    """The first epoch (in `epochs` order) whose verdict is class-selective, or None."""
    for epoch, verdict in zip(epochs, verdicts):
        if verdict_kind(verdict) == CLASS:
            return int(epoch)
    return None


def layer_emergence(epochs, verdicts_by_epoch: list[list[str]]) -> list[int | None]:
    """Every unit's emergence epoch, from one verdict list per epoch (each over the layer's units)."""
    units = len(verdicts_by_epoch[0]) if verdicts_by_epoch else 0
    return [emergence_epoch(epochs, [v[u] for v in verdicts_by_epoch]) for u in range(units)]


def kind_counts(verdicts_by_epoch: list[list[str]]) -> dict[str, np.ndarray]:
    """{'class': (E,), 'feature': (E,), 'dead': (E,)} unit counts of each verdict kind per epoch."""
    kinds = [[verdict_kind(v) for v in verdicts] for verdicts in verdicts_by_epoch]
    return {k: np.array([row.count(k) for row in kinds], dtype=np.int64) for k in KINDS}


def emergence_order(emergence: list[int | None]) -> list[int]:
    """Units by emergence epoch, earliest first; units that never became class-selective last, by index."""
    return sorted(range(len(emergence)), key=lambda u: (emergence[u] is None, emergence[u] or 0, u))
