"""A search's Optuna study: where it is stored, and claiming its trials so that processes sharing it
train exactly `trials` between them (training.sweep.search_run trains what is claimed here).

A trial counts toward `trials` unless it carries UNCOUNTED_ATTR: "interrupted" (Ctrl-C, SIGTERM or a lost
store cut it off, so a rerun proposes another) or "surplus" (claimed past the count by a process racing
another; told FAILED at once, it trains nothing).
"""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from training import contract as C
from training.config import ConfigError, RunConfig
from training.errors import UserError
from training.location import is_server, tracking_uri
from training.sweep.gridfile import GridSpec

# Optuna attributes (in the study's storage, not in MLflow):
PARENT_ATTR = "mlflow_parent_run_id"  # on the study: the search's MLflow parent run, kept across reruns
RUN_ATTR = "mlflow_run_id"  # on a trial: its MLflow run
UNCOUNTED_ATTR = "uncounted"  # on a trial that does not count toward `trials`: interrupted | surplus
SQLITE_TIMEOUT_S = 60  # several processes write the study's SQLite file at once


def storage_url(given: str | None) -> str:
    """The study's storage: --storage, else `optuna.db` beside a SQLite tracking store."""
    if given:
        return given
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):].split('?', 1)[0]).parent / 'optuna.db'}"
    where = "a tracking server" if is_server(uri) else uri.split(":", 1)[0]
    raise UserError(f"a search on {where} needs --storage URL for its Optuna study, e.g. a database on the "
                    f"same PostgreSQL server (postgresql+psycopg://user@host/optuna)")


def study_name(spec: GridSpec) -> str:
    return f"{experiment(spec)}/{spec.name}"


def experiment(spec: GridSpec) -> str:
    return spec.search.base.get(C.PARAM_EXPERIMENT) or RunConfig.experiment  # the dataclass's default


def open_study(spec: GridSpec, url: str, seed_offset: int = 0):
    """The search's study, created at first use; its sampler seeded per process and per rerun, so two
    workers (or a rerun) don't propose the same random startup trials."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the progress bar
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    search = spec.search
    seeded = replace(search, seed=search.seed * 1000 + seed_offset)
    return optuna.create_study(study_name=study_name(spec), storage=storage, direction=search.direction(),
                               sampler=seeded.make_sampler(), pruner=search.make_pruner(), load_if_exists=True)


def counted(study) -> list:
    """The trials that count toward `trials`, in the order they were claimed."""
    return sorted((t for t in study.get_trials(deepcopy=False) if UNCOUNTED_ATTR not in t.user_attrs),
                  key=lambda t: t.number)


def remaining(study, trials: int) -> int:
    return max(0, trials - len(counted(study)))


def claim(study, spec: GridSpec, n: int) -> list[tuple[object, object]]:
    """Up to n new trials with their configs, none past the search's count (another process may claim
    at the same time: a trial whose place in the claim order is past the count is surplus)."""
    import optuna
    claimed = []
    for _ in range(n):
        trial = study.ask()
        numbers = [t.number for t in counted(study)]
        if numbers.index(trial.number) >= spec.search.trials:
            trial.set_user_attr(UNCOUNTED_ATTR, "surplus")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        try:
            config = spec.search.config(spec.search.suggest(trial))
        except ConfigError as e:  # a combination the file's checks couldn't see ahead: it counts, and fails
            print(f"trial {trial.number} failed before training: {e}", file=sys.stderr)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        claimed.append((trial, config))
    return claimed


def rung_reason(study, trial, epoch: int, value: float, metric: str, direction: str) -> str:
    """Why the pruner stopped a trial, in numbers: its metric at this epoch against the other trials' there."""
    others = [t.intermediate_values[epoch] for t in study.get_trials(deepcopy=False)
              if t.number != trial.number and epoch in t.intermediate_values]
    if not others:
        return f"pruned by the search after epoch {epoch}: {metric} {value:.4f}"
    median = float(np.median(others))
    better = sum((o > value) if direction == "maximize" else (o < value) for o in others)
    return (f"pruned by the search after epoch {epoch}: {metric} {value:.4f} against the median {median:.4f} "
            f"of the {len(others)} other trials there ({better} did better)")


def uncount(trials: list, study) -> None:
    """Trials cut off before they ended: told FAILED, marked so they don't count."""
    import optuna
    for trial in trials:
        trial.set_user_attr(UNCOUNTED_ATTR, "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def safe_url(url: str) -> str:
    """The storage URL without a password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[1]}"
    return url
