"""A grid file's search: section: checked whole before anything runs, and turned into Optuna's sampler, pruner,
distributions and trial suggestions whose configs validate."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, sqlite_uri
from training import contract as C
from training.config import ConfigError
from training.errors import UserError
from training.grid import main as grid_main
from training.sweep.gridfile import load_grid
from training.sweep.search_spec import KINDS, SEARCH_KEYS, decode, encode

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = """
    experiment: nielsen-search
    base: {activation: sigmoid, loss: mse, init: nielsen, val_size: 10000, epochs: 30}
    search:
      trials: 60
      sampler: tpe
      pruner: hyperband
      metric: val_acc
      seed: 0
      space:
        lr: {log_uniform: [0.1, 10]}
        batch_size: {choice: [10, 20, 50]}
        sizes: {choice: [[784, 10, 10], [784, 20, 10], [784, 30, 10], [784, 50, 10], [784, 100, 10]]}
"""
# Every kind of dimension, for the suggestion tests.
MIXED_SPACE = {"lr": {"log_uniform": [0.1, 10]}, "momentum": {"uniform": [0.0, 0.9]},
               "train_size": {"int": [1000, 5000]}, "batch_size": {"choice": [10, 20, 50]},
               "sizes": {"choice": [[784, 10, 10], [784, 30, 10], [784, 16, 16, 10]]},
               "init": {"choice": [None, "nielsen"]}}
CHOICE_SPACE = {"batch_size": {"choice": [10, 20]}, "sizes": {"choice": [[784, 10, 10], [784, 30, 10]]},
                "lr": {"choice": [0.5, 3.0]}}


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def search_file(tmp_path, base="{val_size: 10000, epochs: 3}", top="", **search):
    """A search file: GOOD's search section with `search` keys replaced (None drops a key)."""
    section = {"trials": 5, "sampler": "tpe", "pruner": "hyperband", "metric": "val_acc", "seed": 0,
               "space": {"lr": {"log_uniform": [0.1, 10]}}}
    section.update(search)
    section = {k: v for k, v in section.items() if v is not None}
    text = f"experiment: s\nbase: {base}\n{top}" + yaml.safe_dump({"search": section}, default_flow_style=None)
    return write(tmp_path, text)


def space(**dims):
    return {name: yaml.safe_load(d) if isinstance(d, str) else d for name, d in dims.items()}


BAD = [  # (the file's differences from a good search, what the one line must say)
    (dict(space=space(lr="{normal: [0, 1]}")), "search.space.lr: unknown distribution 'normal'"),
    (dict(space=space(lr="{log_uniform: [0.1, 10], uniform: [0, 1]}")), "search.space.lr="),
    (dict(sampler="bayes"), "search.sampler='bayes' is not one of tpe, random, cmaes, grid"),
    (dict(pruner="asha"), "search.pruner='asha' is not one of hyperband"),
    (dict(trails=5), "search.trails: unknown key"),
    (dict(trials=None), "search.trials is missing"),
    (dict(trials=0), "search.trials=0 should be a positive integer"),
    (dict(trials=-3), "search.trials=-3 should be a positive integer"),
    (dict(trials=2.5), "search.trials=2.5 should be a positive integer"),
    (dict(trials=True), "search.trials=True should be a positive integer"),
    (dict(trials="ten"), "search.trials='ten' should be a positive integer"),
    (dict(seed=1.5), "search.seed=1.5 should be an integer"),
    (dict(seed="lucky"), "search.seed='lucky' should be an integer"),
    (dict(seed=-1), "search.seed=-1 should be an integer >= 0"),
    (dict(space=space(lr="{uniform: [1.0, 1.0]}")), "search.space.lr.uniform=[1.0, 1.0] is empty or reversed"),
    (dict(space=space(lr="{uniform: [3.0, 1.0]}")), "search.space.lr.uniform=[3.0, 1.0] is empty or reversed"),
    (dict(space=space(train_size="{int: [5000, 1000]}")), "search.space.train_size.int=[5000, 1000] is empty"),
    (dict(space=space(lr="{log_uniform: [0, 1]}")), "search.space.lr.log_uniform=[0, 1]: a log scale needs low > 0"),
    (dict(space=space(lr="{log_uniform: [-1, 1]}")), "search.space.lr.log_uniform=[-1, 1]: a log scale"),
    (dict(space=space(batch_size="{int: [1.5, 10]}")), "search.space.batch_size.int=[1.5, 10] should be two integers"),
    (dict(space=space(lr="{uniform: [1.0]}")), "search.space.lr.uniform=[1.0] should be [low, high]"),
    (dict(space=space(lr="{log_uniform: [1e-3, 1.0]}")), "YAML reads 1e-3 as text"),
    (dict(space=space(lr="{uniform: [.nan, 1.0]}")), "two finite numbers"),
    (dict(space=space(batch_size="{choice: []}")), "search.space.batch_size.choice=[] should be a non-empty list"),
    (dict(space=space(batch_size="{choice: [10, 10]}")), "search.space.batch_size.choice: option 10 is given twice"),
    (dict(space=space(batch_size="{choice: [{a: 1}]}")), "search.space.batch_size.choice: option {'a': 1} should"),
    (dict(metric="test_acc"), "search.metric='test_acc': a search optimises a validation metric (val_acc, "
                              "val_loss), never the test set"),
    (dict(metric="val_accuracy"), "search.metric='val_accuracy': a search optimises a validation metric"),
    (dict(base="{epochs: 3}"), "base.val_size: a search needs held-out images"),
    (dict(base="{val_size: 0}"), "base.val_size: a search needs held-out images"),
    (dict(space=space(val_size="{int: [1000, 10000]}")), "search.space.val_size: val_size cannot be searched"),
    (dict(space=space(epochs="{int: [1, 10]}")), "search.space.epochs: epochs cannot be searched"),
    (dict(space=space(colour="{choice: [red]}")), "search.space.colour: not a training option"),
    (dict(space=space(sizes="{choice: [[784, 30, 10], [100, 10]]}")),
     "search.space.sizes option [100, 10]: sizes=(100, 10) must start at 784 and end at 10"),
    (dict(space=space(batch_size="{choice: [10, 0]}")),
     "search.space.batch_size option 0: batch_size=0 must be between 1 and train_size"),
    (dict(space=space(batch_size="{choice: [10, 20.5]}")), "search.space.batch_size option 20.5: batch_size=20.5"),
    (dict(space=space(batch_size="{uniform: [10, 50]}")), "search.space.batch_size low 10.0: batch_size=10.0 should"),
    (dict(space=space(momentum="{uniform: [0.0, 1.0]}")), "search.space.momentum high 1.0: momentum=1.0 must be in"),
    (dict(space=space(train_size="{int: [100, 1000]}", batch_size="{choice: [10, 500]}")),
     "search.space.batch_size option 500 with train_size=100: batch_size=500 must be between 1 and train_size (100)"),
    (dict(base="{val_size: 10000, colour: red}"), "search base: unknown key 'colour'"),
    (dict(sampler="grid"), "search.sampler=grid needs every dimension to be a choice list; search.space.lr is"),
    (dict(sampler="grid", trials=5, space=space(batch_size="{choice: [10, 20]}")),
     "search.trials=5 is more than the 2 points of the grid"),
    (dict(space={}), "search.space should map training options to distributions"),
    (dict(top="grid: {lr: [1.0]}\n"), "search and grid do not mix"),
    (dict(top="runs: [{lr: 1.0}]\n"), "search and runs do not mix"),
]


def bad_file(tmp_path, changes):
    changes = dict(changes)
    return search_file(tmp_path, base=changes.pop("base", "{val_size: 10000, epochs: 3}"),
                       top=changes.pop("top", ""), **changes)


@pytest.mark.parametrize("changes, named", BAD, ids=[named[:50] for _, named in BAD])
def test_a_bad_search_is_one_config_error_naming_the_file_and_the_key(tmp_path, changes, named):
    path = bad_file(tmp_path, changes)
    with pytest.raises(ConfigError) as e:
        load_grid(path)
    assert str(e.value).startswith(f"{path}: ") and named in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("changes, named", BAD, ids=[named[:50] for _, named in BAD])
def test_a_bad_search_exits_2_with_one_line_before_any_store_exists(tmp_path, changes, named):
    path = bad_file(tmp_path, changes)
    db = tmp_path / "store" / "mlflow.db"
    result = subprocess.run([sys.executable, "-m", "training.grid", str(path)], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": sqlite_uri(db.parent)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert result.stderr.startswith(f"error: {path}: ") and named in result.stderr
    assert result.stdout == ""
    assert not db.exists()


def test_storage_is_refused_for_a_plain_grid(tmp_path):
    path = write(tmp_path, "grid: {lr: [1.0]}\n")
    with pytest.raises(UserError) as e:
        grid_main([str(path), "--dry-run", "--storage", "sqlite:///x.db"])
    assert "--storage is the Optuna study's storage, and this file has no search: section" in str(e.value)


def test_the_dry_run_of_a_search_prints_its_plan_without_optuna_and_creates_no_store(tmp_path):
    path = write(tmp_path, GOOD)
    db = tmp_path / "store" / "mlflow.db"
    code = ("import sys; from training.grid import main; code = main([sys.argv[1], '--dry-run']); "
            "assert 'optuna' not in sys.modules and 'mlflow' not in sys.modules, 'imported'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": sqlite_uri(db.parent)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"{path}: a search of 60 trials, experiment 'nielsen-search'",
        "  sampler tpe (seed 0), pruner hyperband, metric val_acc (maximize), 30 epochs a trial",
        "  base: activation=sigmoid, loss=mse, init=nielsen, val_size=10000, epochs=30",
        "  lr             log_uniform  [0.1, 10]",
        "  batch_size     choice       [10, 20, 50]",
        "  sizes          choice       [[784, 10, 10], [784, 20, 10], [784, 30, 10], [784, 50, 10], [784, 100, 10]]",
        "nothing trained (--dry-run)",
    ]
    assert not db.exists()


def test_a_search_file_has_no_configs_and_keeps_the_file_as_written(tmp_path):
    spec = load_grid(write(tmp_path, GOOD))
    s = spec.search
    assert spec.configs == [] and spec.name == "s"
    assert (s.trials, s.sampler, s.pruner, s.metric, s.seed) == (60, "tpe", "hyperband", C.VAL_ACC, 0)
    assert s.base[C.PARAM_EXPERIMENT] == "nielsen-search" and s.base[C.PARAM_VAL_SIZE] == 10000
    assert json.loads(s.space_json()) == yaml.safe_load(textwrap.dedent(GOOD))["search"]["space"]
    assert s.space_json() == json.dumps(json.loads(s.space_json()))  # one line
    assert s.direction() == "maximize" and s.epochs() == 30
    assert [d.kind for d in s.space] == ["log_uniform", "choice", "choice"]
    assert s.space[2].choices[0] == (784, 10, 10)


def test_the_search_settings_default_and_val_loss_is_minimised(tmp_path):
    s = load_grid(search_file(tmp_path, sampler=None, pruner=None, metric=None, seed=None)).search
    assert (s.sampler, s.pruner, s.metric, s.seed) == ("tpe", "hyperband", C.VAL_ACC, 0)
    s = load_grid(search_file(tmp_path, metric="val_loss")).search
    assert s.direction() == "minimize" and s.epochs() == 3


def test_config_builds_base_plus_params_and_a_bad_one_names_the_search_and_the_params(tmp_path):
    s = load_grid(write(tmp_path, GOOD)).search
    config = s.config({"lr": 0.5, "batch_size": 20, "sizes": (784, 50, 10)})
    assert (config.lr, config.batch_size, config.sizes, config.experiment) == (0.5, 20, (784, 50, 10), "nielsen-search")
    assert (config.val_size, config.train_size, config.init, config.epochs) == (10000, 50000, "nielsen", 30)
    assert s.config({"sizes": "[784, 50, 10]"}).sizes == (784, 50, 10)  # an Optuna value is decoded
    with pytest.raises(ConfigError) as e:
        s.config({"lr": 0.5, "batch_size": 0})
    assert str(e.value).startswith("search 'nielsen-search' with lr=0.5, batch_size=0: batch_size=0 must be")


@pytest.mark.parametrize("value", [(784, 30, 10), [784, 16, 16, 10], (784, 10)])
def test_a_list_option_is_encoded_as_json_text_and_decoded_back_to_a_tuple(value):
    encoded = encode(C.PARAM_SIZES, value)
    assert isinstance(encoded, str) and json.loads(encoded) == list(value)
    assert decode(C.PARAM_SIZES, encoded) == tuple(value)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()))
def test_a_scalar_option_passes_through_encode_and_decode_unchanged(value):
    assert encode(C.PARAM_LR, value) == value and decode(C.PARAM_ACTIVATION, encode(C.PARAM_ACTIVATION, value)) == value


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=6))
def test_decode_inverts_encode_for_any_list_of_sizes(sizes):
    assert decode(C.PARAM_SIZES, encode(C.PARAM_SIZES, sizes)) == tuple(sizes)


def in_dimension(d, value) -> bool:
    if d.kind == "choice":
        return value in d.choices
    kind_ok = isinstance(value, int) if d.kind == "int" else isinstance(value, float)
    return kind_ok and d.low <= value <= d.high


@pytest.mark.parametrize("sampler, space_doc", [("tpe", MIXED_SPACE), ("random", MIXED_SPACE),
                                                ("grid", CHOICE_SPACE)])
def test_suggested_trials_lie_in_the_space_and_make_valid_configs(tmp_path, sampler, space_doc):
    s = load_grid(search_file(tmp_path, sampler=sampler, trials=8, space=space_doc)).search
    study = optuna.create_study(direction=s.direction(), sampler=s.make_sampler(), pruner=s.make_pruner())
    seen = set()
    for _ in range(8):  # past TPE's startup trials too
        trial = study.ask()
        params = s.suggest(trial)
        assert list(params) == [d.name for d in s.space]
        assert all(in_dimension(d, params[d.name]) for d in s.space), params
        assert trial.distributions == s.distributions()
        assert {k: decode(k, v) for k, v in trial.params.items()} == params
        config = s.config(params)
        assert all(getattr(config, name) == value for name, value in params.items())
        seen.add(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}))
        study.tell(trial, config.lr * config.batch_size)
    if sampler == "grid":  # every point of the 8-point grid, once
        assert len(seen) == 8


def test_a_seeded_sampler_proposes_the_same_trials_again(tmp_path):
    s = load_grid(search_file(tmp_path, trials=12, space=MIXED_SPACE)).search

    def proposals():
        study = optuna.create_study(direction=s.direction(), sampler=s.make_sampler())
        out = []
        for i in range(12):
            trial = study.ask()
            out.append(s.suggest(trial))
            study.tell(trial, float(i % 5))
        return out
    first = proposals()
    assert first == proposals() and len({json.dumps(p, default=list) for p in first}) > 6


@pytest.mark.parametrize("name, cls", [("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
                                       ("grid", optuna.samplers.GridSampler)])
def test_each_sampler_is_optunas(tmp_path, name, cls):
    space_doc = CHOICE_SPACE if name == "grid" else MIXED_SPACE
    assert isinstance(load_grid(search_file(tmp_path, sampler=name, space=space_doc)).search.make_sampler(), cls)


def test_the_grid_sampler_visits_every_point_once_and_telling_the_last_does_not_raise(tmp_path):
    s = load_grid(search_file(tmp_path, sampler="grid", trials=8, space=CHOICE_SPACE)).search
    study = optuna.create_study(sampler=s.make_sampler())
    trials = [study.ask() for _ in range(8)]  # all at once, as a stack trains them
    points = {json.dumps(s.suggest(t), default=list, sort_keys=True) for t in trials}
    for t in trials:
        study.tell(t, 1.0)  # Optuna's own GridSampler raises RuntimeError here, at the last point
    assert len(points) == 8 and len(study.trials) == 8


def test_cmaes_is_optunas_sampler_or_a_one_line_request_for_its_package(tmp_path):
    path = search_file(tmp_path, sampler="cmaes")
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ConfigError, match="search.sampler=cmaes needs the cmaes package: pip install cmaes"):
            load_grid(path)
    else:
        assert type(load_grid(path).search.make_sampler()) is optuna.samplers.CmaEsSampler


@pytest.mark.parametrize("name, cls", [("hyperband", optuna.pruners.HyperbandPruner),
                                       ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
                                       ("median", optuna.pruners.MedianPruner), ("none", optuna.pruners.NopPruner)])
def test_each_pruner_is_optunas(tmp_path, name, cls):
    assert type(load_grid(search_file(tmp_path, pruner=name)).search.make_pruner()) is cls


def test_hyperband_prunes_the_poor_trials_at_its_rungs_within_the_configs_epochs(tmp_path):
    """Half the trials report a poor value at every epoch: only they are stopped, at the rungs 1 and 3 (eta 3)."""
    s = load_grid(search_file(tmp_path, base="{val_size: 10000, epochs: 3}", pruner="hyperband",
                              space={"lr": {"uniform": [0.1, 10.0]}})).search
    study = optuna.create_study(direction=s.direction(), sampler=s.make_sampler(), pruner=s.make_pruner())
    pruned_at, pruned_good = [], 0
    for i in range(30):
        trial = study.ask()
        s.suggest(trial)
        stopped = None
        for epoch in range(1, s.epochs() + 1):
            trial.report(0.9 if i % 2 else 0.1, epoch)  # half the trials are far worse
            if trial.should_prune():
                stopped = epoch
                break
        if stopped:
            pruned_at.append(stopped)
            pruned_good += i % 2
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 0.9 if i % 2 else 0.1)
    assert len(pruned_at) >= 5 and set(pruned_at) <= {1, 3} and pruned_good == 0


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.recursive(
    st.none() | st.booleans() | st.integers(-5, 800) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(list(SEARCH_KEYS) + list(KINDS) + ["lr", "sizes", "batch_size", "tpe", "x"]),
        inner, max_size=4), max_leaves=14))
def test_the_search_parser_only_ever_raises_config_errors(tmp_path, section):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump({"base": {"val_size": 10000}, "search": section}))
    try:
        spec = load_grid(path)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert spec.configs == [] and spec.search.space
