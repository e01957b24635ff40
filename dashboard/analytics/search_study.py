"""A search's Optuna study rebuilt in memory from its trials, and how far its importances can be trusted.

The search review draws with optuna.visualization, which reads a Study; the MLflow store holds everything
a Study needs (each trial's params, per-epoch metric and state), so the page rebuilds one with Optuna's
public `create_study` + `add_trial(create_trial(...))` instead of opening the search's Optuna storage,
which may be on another machine.  No Dash, no MLflow here: plain trials in, a Study out.
"""
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState

from training.sweep import search_spec

FANOVA_SEED = 0
# FanovaImportanceEvaluator's forest (its defaults): the R² below is computed on a forest built the same way.
FANOVA_TREES, FANOVA_DEPTH = 64, 64

STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL,
          "running": TrialState.RUNNING}


@dataclass(frozen=True)
class TrialData:
    """One trial as the store holds it: Optuna's number, its state (a key of STATES), its params, its metric
    per epoch, and its final value."""
    number: int
    state: str
    params: dict = field(default_factory=dict)  # name -> value in Optuna's encoding (search_spec.encode)
    intermediate: dict = field(default_factory=dict)  # epoch -> metric, finite values only
    value: float | None = None  # the metric at its last epoch; complete trials only
    run_id: str = ""


def distribution(name: str, kind: str, args) -> BaseDistribution:
    """The Optuna distribution of one `space` entry as the parent logs it ({"log_uniform": [0.1, 10]}), the one
    the search suggested from (training.sweep.search_spec: choices encoded); ValueError if it is not one."""
    numbers = isinstance(args, list) and len(args) == 2 and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and np.isfinite(a) for a in args)
    dimension = None
    if kind in (search_spec.LOG_UNIFORM, search_spec.UNIFORM) and numbers:
        dimension = search_spec.Dimension(name, kind, args[0], args[1])
    elif kind == search_spec.INT and numbers and all(isinstance(a, int) for a in args):
        dimension = search_spec.Dimension(name, kind, args[0], args[1])
    elif kind == search_spec.CHOICE and isinstance(args, list) and args:
        dimension = search_spec.Dimension(name, kind, choices=tuple(args))
    if dimension is not None:
        return dimension.distribution()  # built as the search built it
    raise ValueError(f"{{{str(kind)[:40]!r}: {str(args)[:80]}}} is not a distribution of search_spec's")


def rebuild(direction: str, distributions: dict[str, BaseDistribution], trials: list[TrialData]) -> optuna.Study:
    """An in-memory study holding `trials` in number order.  Optuna numbers trials as they are added, so a
    number with no trial (a run deleted from the store) is filled by a failed trial that no figure draws,
    and every trial keeps its number.  ValueError, from Optuna, if a trial's params are not in the space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    by_number = {t.number: t for t in trials}
    for number in range(max(by_number, default=-1) + 1):
        t = by_number.get(number)
        if t is None:
            study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
            continue
        study.add_trial(optuna.trial.create_trial(
            state=STATES[t.state], value=t.value if t.state == "complete" else None,
            params={k: v for k, v in t.params.items() if k in distributions},
            distributions={k: d for k, d in distributions.items() if k in t.params},
            intermediate_values=t.intermediate, user_attrs={"run_id": t.run_id}))
    return study


def best_so_far(study: optuna.Study) -> list[tuple[int, float]]:
    """(trial number, best value up to it) after each complete trial: the curve the history plot draws."""
    best, out = None, []
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = t.value if best is None else better(best, t.value)
        out.append((t.number, best))
    return out


def design_matrix(study: optuna.Study) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The complete trials as fANOVA sees them: every param of more than one value, numbers as they are
    (FanovaImportanceEvaluator does not log-transform) and categories one-hot; and their values."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    dists = {}
    for t in trials:
        dists.update(t.distributions)
    names = sorted(n for n, d in dists.items() if not d.single())
    columns, labels = [], []
    for n in names:
        d = dists[n]
        if isinstance(d, CategoricalDistribution):
            for i, choice in enumerate(d.choices):
                columns.append([float(d.to_internal_repr(t.params[n]) == i) if n in t.params else np.nan
                                for t in trials])
                labels.append(f"{n}={choice}")
        else:
            columns.append([float(t.params.get(n, np.nan)) for t in trials])
            labels.append(n)
    x = np.array(columns, dtype=float).T if columns else np.zeros((len(trials), 0))
    return x, np.array([t.value for t in trials], dtype=float), labels


def fanova_r2(study: optuna.Study) -> float | None:
    """Out-of-bag R² of a forest built as Optuna's fANOVA builds its own (trees, depth, seed, columns): how
    much of the metric's variance across complete trials that kind of model predicts on trials it did not
    see.  None when there is nothing to fit (under 3 trials, no varying param, or a constant metric)."""
    x, y, _ = design_matrix(study)
    if len(y) < 3 or x.shape[1] == 0 or np.ptp(y) == 0 or np.isnan(x).any():
        return None
    from sklearn.ensemble import RandomForestRegressor  # here: scikit-learn is slow to import
    import warnings
    with warnings.catch_warnings():  # a tiny study leaves a trial in every bootstrap: sklearn warns, R² stands
        warnings.simplefilter("ignore", UserWarning)
        forest = RandomForestRegressor(n_estimators=FANOVA_TREES, max_depth=FANOVA_DEPTH, min_samples_split=2,
                                       min_samples_leaf=1, random_state=FANOVA_SEED, oob_score=True).fit(x, y)
    return float(forest.oob_score_)


def fanova_evaluator():
    return optuna.importance.FanovaImportanceEvaluator(seed=FANOVA_SEED)
