"""What a search says when it ends: its parent run's description and the summary it prints."""
from training.sweep.gridfile import GridSpec
from training.sweep.search_study import RUN_ATTR, counted


def describe_search(spec: GridSpec, study, status: str, reason: str | None) -> str:
    """The parent run's description: the search's settings, how its trials ended, and the best."""
    s = spec.search
    states = {}
    for t in counted(study):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    text = (f"Search **{spec.name}** from `{spec.path}`: {s.trials} trials, sampler {s.sampler}, pruner {s.pruner}, "
            f"{s.direction()} {s.metric}. Trials so far: "
            + (", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none") + ".")
    best = [t for t in study.trials if t.state.name == "COMPLETE"]
    if best:
        b = study.best_trial
        text += f" Best: trial {b.number}, {s.metric} {b.value:.4f}, run {b.user_attrs.get(RUN_ATTR, '?')}."
    return text + f"\n\n**{status}**" + (f": {reason}." if reason else ".")


def print_search_summary(study, spec: GridSpec, parent_id: str, seconds: float) -> None:
    s = spec.search
    trials = counted(study)
    by_state = {}
    for t in trials:
        by_state.setdefault(t.state.name.lower(), []).append(t)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    sign = -1 if s.direction() == "maximize" else 1
    print()
    print(f"{'trial':>5}  {s.metric:>8}  trained  state     params")
    for t in sorted(done, key=lambda t: sign * t.value)[:10]:
        print(f"{t.number:5d}  {t.value:8.4f}  {max(t.intermediate_values, default=0):7d}  complete  "
              + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()))
    epochs = sum(max(t.intermediate_values, default=0) for t in trials)
    print(f"\nsearch {spec.name}: {len(trials)} of {s.trials} trials ("
          + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_state.items())) + f"), {epochs} model-epochs "
          f"of {len(trials) * s.epochs()} without pruning; parent run {parent_id}; {seconds:.0f}s")
    if done:
        print(f"best: trial {study.best_trial.number}, {s.metric} {study.best_value:.4f}, "
              f"run {study.best_trial.user_attrs.get(RUN_ATTR)}")
