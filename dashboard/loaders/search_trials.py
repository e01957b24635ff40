"""A search, read once for its review page: the parent run's settings, every trial's run and metric per
epoch, and the Optuna study rebuilt from them (dashboard.analytics.search_study).

Everything here is untrusted: a parent whose settings are missing or garbled is refused with one line
(StoreError); a trial whose tags or params make no sense is left out and named in `notes`, and the page
shows the rest.
"""
import json
import math
import re
from dataclasses import dataclass, replace

import numpy as np

from dashboard.analytics import search_study as S
from dashboard.read import store
from training import contract as C
from training.config import ConfigError, RunConfig
from training.sweep import search_spec

MAX_TRIALS = 5000  # trials read for one page; a store with more is cut, with a note
# The highest trial number shown: the rebuilt study fills every number below the highest (search_study.rebuild),
# so one garbled number must not make the page build a study of millions.
MAX_TRIAL_NUMBER = MAX_TRIALS
# A choice's options become category labels in Plotly, which renders some HTML in them: only plain values.
PLAIN_TEXT = re.compile(r"^[A-Za-z0-9_.,+\[\] -]{1,64}$")  # sizes: search_spec.encode's "[784, 30, 10]"
SETTINGS = (C.PARAM_SEARCH_SAMPLER, C.PARAM_SEARCH_PRUNER, C.PARAM_SEARCH_METRIC, C.PARAM_SEARCH_TRIALS,
            C.PARAM_SEARCH_SEED, C.PARAM_SEARCH_SPACE)


@dataclass(frozen=True)
class Trial:
    number: int
    run_id: str
    name: str
    state: str  # complete | pruned | failed | running (search_study.STATES)
    status: str  # the run's MLflow status
    pruned_at: int | None
    note: str  # the run's description: why it was pruned, or why it failed
    params: dict  # the space's params, in Optuna's encoding
    steps: np.ndarray  # the search metric per epoch, step 0 (untrained) included
    values: np.ndarray
    value: float | None  # its last finite metric (a complete trial's value)


@dataclass(frozen=True)
class Search:
    run_id: str
    name: str
    status: str
    experiment_id: str
    metric: str
    direction: str  # maximize | minimize
    sampler: str
    pruner: str
    n_trials: int  # the trials the search asked for
    seed: str
    space: dict  # name -> Optuna distribution
    best_run_id: str | None  # the parent's tag, set when the search ends
    trials: tuple  # Trial, by number
    study: object  # optuna.Study
    notes: tuple  # one line per trial left out

    @property
    def running(self) -> bool:
        return self.status == C.STATUS_RUNNING


def _settings(run) -> dict:
    """The parent's search settings, checked; StoreError naming the first that is missing or garbled."""
    rid, params = run.info.run_id, run.data.params
    where = f"run {rid[:8]} is a search's parent run, but"
    if missing := [k for k in SETTINGS if k not in params]:
        raise store.StoreError(f"{where} it has no {', '.join(missing)} param")
    metric = params[C.PARAM_SEARCH_METRIC]
    if metric not in C.SEARCH_METRICS:
        raise store.StoreError(f"{where} its {C.PARAM_SEARCH_METRIC} '{metric[:40]}' is not one of "
                               f"{', '.join(C.SEARCH_METRICS)}")
    trials = params[C.PARAM_SEARCH_TRIALS]
    if not (trials.isdigit() and 0 < int(trials) <= 10 ** 9):
        raise store.StoreError(f"{where} its {C.PARAM_SEARCH_TRIALS} '{trials[:40]}' is not a trial count")
    return dict(metric=metric, n_trials=int(trials), space=_space(params[C.PARAM_SEARCH_SPACE], where),
                sampler=params[C.PARAM_SEARCH_SAMPLER][:40], pruner=params[C.PARAM_SEARCH_PRUNER][:40],
                seed=params[C.PARAM_SEARCH_SEED][:40])


def _space(text: str, where: str) -> dict:
    """name -> Optuna distribution, from the space's JSON; StoreError if it is not a space of config params."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise store.StoreError(f"{where} its {C.PARAM_SEARCH_SPACE} is not JSON") from None
    if not isinstance(raw, dict) or not raw:
        raise store.StoreError(f"{where} its {C.PARAM_SEARCH_SPACE} is not a mapping of params to distributions")
    out = {}
    for name, spec in raw.items():
        if name not in C.CONFIG_PARAMS or not isinstance(spec, dict) or len(spec) != 1:
            raise store.StoreError(f"{where} its {C.PARAM_SEARCH_SPACE} entry '{str(name)[:40]}' is not "
                                   "a training option with one distribution")
        (kind, args), = spec.items()
        try:
            out[name] = S.distribution(name, kind, args)
        except ValueError as e:
            raise store.StoreError(f"{where} {C.PARAM_SEARCH_SPACE} {name}: {e}") from None
        if not all(isinstance(o, (int, float)) or PLAIN_TEXT.match(str(o)) for o in getattr(out[name], "choices", ())):
            raise store.StoreError(f"{where} {C.PARAM_SEARCH_SPACE} {name} has an option that is not a plain value")
    return out


def load(run_id: str) -> Search:
    """The search whose parent run is `run_id`; StoreError, one line, if it is not one or cannot be shown."""
    parent = store.get_run(run_id)
    tags = parent.data.tags
    if tags.get(C.TAG_SEARCH_PARENT) != C.TRUE:
        raise store.StoreError(f"run {run_id} is not a search's parent run (no {C.TAG_SEARCH_PARENT} tag)")
    settings = _settings(parent)
    children = store.search_runs([parent.info.experiment_id], f"tags.`{C.TAG_PARENT_RUN_ID}` = '{run_id}'")
    notes = [f"{len(children) - MAX_TRIALS} trials beyond the first {MAX_TRIALS} are not shown."] \
        if len(children) > MAX_TRIALS else []
    # Oldest first (the store answers newest first): of two runs claiming one trial, the first one logged stands.
    children = sorted(children, key=lambda r: r.info.start_time or 0)[:MAX_TRIALS]
    hist = store.metric_histories(children, [settings["metric"]])
    curves = {rid: (g["step"].to_numpy(), g["value"].to_numpy()) for rid, g in hist.groupby("run_id")}
    trials = {}
    for run in children:
        trial = _trial(run, settings["space"], curves.get(run.info.run_id, (np.zeros(0, int), np.zeros(0))))
        if isinstance(trial, str):
            notes.append(trial)
        elif trial.number in trials:
            notes.append(f"run {run.info.run_id[:8]} claims trial {trial.number}, as run "
                         f"{trials[trial.number].run_id[:8]} does: left out.")
        else:
            trials[trial.number] = trial
    direction = C.SEARCH_METRICS[settings["metric"]]
    study, trials = _study(direction, settings["space"], trials, notes)
    best = tags.get(C.TAG_SEARCH_BEST_RUN)
    return Search(run_id=run_id, name=(tags.get(C.TAG_GRID_NAME) or parent.info.run_name or run_id[:8])[:100],
                  status=parent.info.status, experiment_id=parent.info.experiment_id, direction=direction,
                  best_run_id=best if best and store.RUN_ID_RE.match(best) else None,
                  trials=tuple(trials[n] for n in sorted(trials)), study=study, notes=tuple(notes), **settings)


def _study(direction, space, trials: dict, notes: list):
    """The rebuilt study, without the trials Optuna refuses (a param outside the space), each with a note."""
    kept = {}
    for number, t in trials.items():
        try:
            S.rebuild(direction, space, [replace(_trial_data(t), number=0)])  # alone: no gap before it
            kept[number] = t
        except ValueError as e:
            notes.append(f"run {t.run_id[:8]} (trial {number}) left out: {str(e)[:160]}")
    return S.rebuild(direction, space, [_trial_data(t) for t in kept.values()]), kept


def _trial_data(t: Trial) -> S.TrialData:
    # Optuna reports epochs 1.. to the pruner; step 0, the untrained net, is no step of the search.
    inter = {int(s): float(v) for s, v in zip(t.steps, t.values) if s >= 1 and math.isfinite(v)}
    return S.TrialData(t.number, t.state, t.params, inter, t.value, t.run_id)


def _count(text: str | None) -> int | None:
    """A tag's non-negative integer (a trial number, an epoch), or None: ASCII digits only ("²" is a digit too)."""
    return int(text) if text and len(text) <= 9 and re.fullmatch(r"[0-9]+", text) else None


def _trial(run, space: dict, curve) -> Trial | str:
    """One child run as a trial, or the line saying why it is left out."""
    rid, tags = run.info.run_id, run.data.tags
    number, state = _count(tags.get(C.TAG_SEARCH_TRIAL)), tags.get(C.TAG_SEARCH_STATE)
    if number is None or number > MAX_TRIAL_NUMBER:
        return f"run {rid[:8]} is a child of the search without a trial number ({C.TAG_SEARCH_TRIAL}): left out."
    if state is not None and state not in C.SEARCH_STATES:
        return (f"run {rid[:8]}: {C.TAG_SEARCH_STATE} '{state[:40]}' is not one of {', '.join(C.SEARCH_STATES)}: "
                "left out.")
    try:
        config = RunConfig.from_params(run.data.params, where=f"run {rid[:8]}")
    except ConfigError as e:
        return f"{str(e)[:200]}: left out."
    steps, values = curve
    finite = values[np.isfinite(values)]
    state = state or ("running" if run.info.status == C.STATUS_RUNNING else C.SEARCH_FAILED)
    if state == C.SEARCH_COMPLETE and (not len(values) or not np.isfinite(values[-1])):
        state = C.SEARCH_FAILED  # Optuna's complete trials have a value: one with none failed, whatever its tag
    pruned_at = _count(tags.get(C.TAG_SEARCH_PRUNED_AT))
    if state == C.SEARCH_PRUNED and pruned_at is None and len(steps):
        pruned_at = int(steps[-1])  # the tag is missing: it stopped where its metric did
    return Trial(number=number, run_id=rid, name=run.info.run_name or rid[:8], state=state, status=run.info.status,
                 pruned_at=pruned_at if state == C.SEARCH_PRUNED else None, note=tags.get(C.TAG_NOTE, "")[:3000],
                 params={p: search_spec.encode(p, getattr(config, p)) for p in space}, steps=steps, values=values,
                 value=float(values[-1]) if state == C.SEARCH_COMPLETE else float(finite[-1]) if len(finite) else None)
