"""Which configs train together as one stacked cohort, and how long each takes.

A cohort is configs that share everything that fixes tensor shapes and the step
count (`cohort_key`); they may differ in lr, momentum, seed, init and snapshot
interval.  They share their validation images too, so val_size is part of the key.
Plain config arithmetic, torch-free, so a grid file's plan prints at once.
"""
from training.config import RunConfig

MAX_COHORT = 24  # more models per stack stop paying off on a CPU and cost memory


def cohort_key(config: RunConfig) -> tuple:
    return (config.arch, config.sizes, config.activation, config.loss, config.optimizer, config.batch_size,
            config.epochs, config.train_size, config.val_size)


def steps_per_epoch(config: RunConfig) -> int:
    return -(-config.train_size // config.batch_size)


def total_steps(config: RunConfig) -> int:
    """Optimizer steps one model takes over its whole run: the unit of the progress bars."""
    return config.epochs * steps_per_epoch(config)


def make_cohorts(configs: list[RunConfig], workers: int) -> list[list[RunConfig]]:
    """Group configs that can share a stack; split the biggest groups so every worker has work."""
    groups: dict[tuple, list[RunConfig]] = {}
    for c in configs:
        groups.setdefault(cohort_key(c), []).append(c)
    cohorts = []
    for group in groups.values():
        cohorts += [group[i:i + MAX_COHORT] for i in range(0, len(group), MAX_COHORT)]
    while len(cohorts) < workers:
        biggest = max(cohorts, key=len)
        if len(biggest) < 2:
            break
        cohorts.remove(biggest)
        half = len(biggest) // 2
        cohorts += [biggest[:half], biggest[half:]]
    # Longest first, so parallel workers finish close together.
    return sorted(cohorts, key=lambda co: -sum(total_steps(c) for c in co))

