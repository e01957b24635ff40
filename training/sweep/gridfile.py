"""Grid files: YAML that expands to a list of validated RunConfigs.

    experiment: hidden-layer-study
    base:  {sizes: [784, 20, 10], activation: sigmoid, loss: mse, seed: 0}
    grid:  {lr: [2.5, 3.0], batch_size: [10, 20]}     # cartesian product, merged over base
    runs:  [{epochs: 25, batch_size: 20, lr: 3.0}]     # explicit configs, merged over base

or, instead of grid/runs, a `search:` section (training.sweep.search_spec): an Optuna study proposes the
configs, so the spec has none and carries the search.

Every config is validated before anything runs; an error names the file, the key and the value.
"""
import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

from training import contract as C
from training.config import ConfigError, RunConfig
from training.sweep.search_spec import SearchSpec, load_search

EXPERIMENT = C.PARAM_EXPERIMENT  # the top-level key sets every config's experiment param
SEARCH = "search"
TOP_LEVEL_KEYS = (EXPERIMENT, "base", "grid", "runs", SEARCH)


@dataclass
class GridSpec:
    name: str  # the file's stem: tags every child run so reruns can find it
    path: Path
    text: str
    configs: list[RunConfig]  # [] for a search: its study proposes them
    search: SearchSpec | None = None


def _describe(entry: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in entry.items()) or "base"


def load_grid(path: str | Path) -> GridSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found")
    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}: unknown top-level key '{key}' (known: {', '.join(TOP_LEVEL_KEYS)})")
    base = doc.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: base should be a mapping of training options")
    if EXPERIMENT in doc and (not isinstance(doc[EXPERIMENT], str) or not doc[EXPERIMENT]):
        raise ConfigError(f"{path}: {EXPERIMENT}={doc[EXPERIMENT]!r} should be a non-empty string")
    if SEARCH in doc:
        return _load_search_file(path, text, doc, base)
    grid = doc.get("grid") or {}
    runs = doc.get("runs") or []
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: grid should be a mapping of option: [values]")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{path}: runs should be a list of mappings")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key}={values!r} should be a non-empty list of values")
    if not grid and not runs:
        raise ConfigError(f"{path}: the grid is empty: give a 'grid:' of option lists and/or a 'runs:' list")

    entries = []
    if grid:
        keys = list(grid)
        entries += [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]
    entries += runs
    configs, seen = [], {}
    for i, entry in enumerate(entries):
        merged = {**base, **entry}
        if EXPERIMENT in doc:
            merged.setdefault(EXPERIMENT, doc[EXPERIMENT])
        config = RunConfig.from_dict(merged, where=f"{path}: config {i + 1} ({_describe(entry)})")
        if config.config_hash in seen:
            raise ConfigError(f"{path}: config {i + 1} ({_describe(entry)}) trains the same thing as config "
                              f"{seen[config.config_hash]}; change its seed or drop one")
        seen[config.config_hash] = i + 1
        configs.append(config)
    experiments = {c.experiment for c in configs}
    if len(experiments) > 1:
        raise ConfigError(f"{path}: all configs of a grid go to one experiment, got {', '.join(sorted(experiments))}")
    return GridSpec(path.stem, path, text, configs)


def _load_search_file(path: Path, text: str, doc: dict, base: dict) -> GridSpec:
    both = [key for key in ("grid", "runs") if key in doc]
    if both:
        raise ConfigError(f"{path}: {SEARCH} and {' and '.join(both)} do not mix: a search's study proposes the "
                          f"configs; put fixed options in base and searched ones in {SEARCH}.space")
    base = dict(base)
    if EXPERIMENT in doc:
        base.setdefault(EXPERIMENT, doc[EXPERIMENT])
    return GridSpec(path.stem, path, text, [], load_search(path, doc[SEARCH], base))
