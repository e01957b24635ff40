"""A grid file's `search:` section: the space, sampler, pruner and metric of an Optuna study over RunConfigs.

    experiment: nielsen-search
    base: {activation: sigmoid, loss: mse, init: nielsen, val_size: 10000, epochs: 30}
    search:
      trials: 60              # required
      sampler: tpe            # tpe (default) | random | cmaes | grid
      pruner: hyperband       # hyperband (default) | successive_halving | median | none
      metric: val_acc         # val_acc (default, maximize) | val_loss (minimize); never a test metric
      seed: 0                 # the sampler's seed (default 0)
      space:                  # RunConfig options, each one distribution:
        lr: {log_uniform: [0.1, 10]}        # float on a log scale, 0 < low < high
        momentum: {uniform: [0.0, 0.9]}     # float, low < high
        train_size: {int: [1000, 50000]}    # integer, both ends included
        sizes: {choice: [[784, 30, 10], [784, 100, 10]]}

The whole section is checked when the file loads, without importing Optuna, so a bad file or a --dry-run
answers at once: every range end and every choice option must make a valid config over `base`, alone and
with the other dimensions at their first value (low, or the first option).

Choices are encoded for Optuna, whose categorical values may only be None, bool, int, float or str: an
option that is a list (sizes) becomes its JSON text, "[784, 30, 10]"; every other option passes as it is.
`decode(name, value)` turns an Optuna value back into the real one (a list option into a tuple, as RunConfig
holds sizes); `encode(name, value)` goes the other way.  A trial's MLflow params are RunConfig.as_params
text: read them with RunConfig.from_params, then `encode(name, getattr(config, name))` gives the Optuna value.
"""
import importlib.util
import json
import math
from dataclasses import dataclass, fields

from training import contract as C
from training.config import ConfigError, RunConfig

LOG_UNIFORM, UNIFORM, INT, CHOICE = "log_uniform", "uniform", "int", "choice"
KINDS = (LOG_UNIFORM, UNIFORM, INT, CHOICE)
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("hyperband", "successive_halving", "median", "none")
TRIALS, SAMPLER, PRUNER, METRIC, SEED, SPACE = "trials", "sampler", "pruner", "metric", C.PARAM_SEED, "space"
SEARCH_KEYS = (TRIALS, SAMPLER, PRUNER, METRIC, SEED, SPACE)
DEFAULTS = {SAMPLER: "tpe", PRUNER: "hyperband", METRIC: C.VAL_ACC, SEED: 0}
# Hyperband's and successive halving's eta: keep the best quarter at each rung.  With 30 epochs, eta 3 puts
# the last rung at epoch 27, where stopping a trial saves 3 epochs; eta 4 puts it at 16 and needs 3 brackets,
# not 4 (benchmarks/search_vs_grid.py: 41 % of the grid's model-epochs with eta 3 on seed 0, 28 % with 4).
REDUCTION_FACTOR = 4
# TPE's random startup trials.  Hyperband hands the sampler only the trials of the new trial's bracket
# (Optuna's HyperbandPruner docs), so each bracket pays its own startup: 10 each (Optuna's default) would
# leave most of a 60-trial search random.
TPE_STARTUP_TRIALS = 5
MEDIAN_STARTUP_TRIALS = 5  # the median pruner waits for this many finished trials before it prunes any
# Options the space may not search, and why.
FIXED_OPTIONS = {
    C.PARAM_VAL_SIZE: "every trial must be scored on the same held-out images: set base.val_size instead",
    C.PARAM_EPOCHS: "the epochs are the pruner's budget, the same for every trial: set base.epochs instead",
    C.PARAM_EXPERIMENT: "a search logs to one experiment: set the top-level experiment instead",
    C.PARAM_RUN_NAME: "a run's name trains nothing",
}
OPTIONS = tuple(f.name for f in fields(RunConfig))
LIST_OPTIONS = tuple(f.name for f in fields(RunConfig) if "tuple" in str(f.type))  # sizes


def encode(name: str, value):
    """A real option value as Optuna can hold it: a list (or tuple) becomes its JSON text."""
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value


def decode(name: str, value):
    """An Optuna param value back to the real one: a list option's JSON text becomes a tuple of its items."""
    if name in LIST_OPTIONS and isinstance(value, str) and value.startswith("["):
        return tuple(json.loads(value))
    return value


def _show(value) -> str:
    """A value as the file would write it: lists in brackets, null, true."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _describe(values: dict) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in values.items())


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # one of KINDS
    low: float | int | None = None  # as written in the file; both ends included
    high: float | int | None = None
    choices: tuple = ()  # the real options (a list option as a tuple)

    def written(self) -> dict:
        """The dimension as the file writes it: {"log_uniform": [0.1, 10]}."""
        if self.kind == CHOICE:
            return {CHOICE: [list(c) if isinstance(c, tuple) else c for c in self.choices]}
        return {self.kind: [self.low, self.high]}

    def first(self):
        """The value a config takes while another dimension's values are checked."""
        return self.choices[0] if self.kind == CHOICE else self._as_suggested(self.low)

    def ends(self) -> list[tuple[str, object]]:
        """Every value to check, labelled: each option, or the range's two ends as Optuna would suggest them."""
        if self.kind == CHOICE:
            return [("option", c) for c in self.choices]
        return [("low", self._as_suggested(self.low)), ("high", self._as_suggested(self.high))]

    def _as_suggested(self, value):
        return int(value) if self.kind == INT else float(value)

    def encoded_choices(self) -> list:
        return [encode(self.name, c) for c in self.choices]

    def distribution(self):
        """The Optuna distribution `suggest` asks a trial for (choices encoded); the search review rebuilds
        its study with the same ones."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
        if self.kind == CHOICE:
            return CategoricalDistribution(self.encoded_choices())
        if self.kind == INT:
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == LOG_UNIFORM)


@dataclass(frozen=True)
class SearchSpec:
    trials: int
    sampler: str
    pruner: str
    metric: str
    seed: int
    space: tuple[Dimension, ...]
    base: dict  # the file's base mapping, with `experiment` set when the file gives one

    def direction(self) -> str:
        return C.SEARCH_METRICS[self.metric]

    def epochs(self) -> int:
        return RunConfig.from_dict(self.base, where=self._where()).epochs

    def make_sampler(self):
        import optuna  # only a search that runs pays for Optuna
        if self.sampler == "tpe":  # the constant liar keeps trials that run together in one stack apart
            # multivariate: lr's best value depends on the batch size and the net, so they are modelled jointly.
            return optuna.samplers.TPESampler(seed=self.seed, constant_liar=True, multivariate=True,
                                              n_startup_trials=TPE_STARTUP_TRIALS)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        if self.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=self.seed)
        return _ask_tell_grid_sampler({d.name: d.encoded_choices() for d in self.space}, self.seed)

    def make_pruner(self):
        import optuna
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=self.epochs(),
                                                  reduction_factor=REDUCTION_FACTOR)
        if self.pruner == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION_FACTOR)
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=1)
        return optuna.pruners.NopPruner()

    def distributions(self) -> dict:
        """name -> Optuna distribution, the same ones `suggest` asks a trial for (choices encoded)."""
        return {d.name: d.distribution() for d in self.space}

    def suggest(self, trial) -> dict:
        """{option: real value} for one Optuna trial."""
        out = {}
        for d in self.space:
            if d.kind == CHOICE:
                out[d.name] = decode(d.name, trial.suggest_categorical(d.name, d.encoded_choices()))
            elif d.kind == INT:
                out[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high))
            else:
                out[d.name] = trial.suggest_float(d.name, float(d.low), float(d.high), log=d.kind == LOG_UNIFORM)
        return out

    def config(self, params: dict) -> RunConfig:
        """base + params, validated.  Params may be real or Optuna values (encoded choices are decoded)."""
        values = {name: decode(name, value) for name, value in params.items()}
        return RunConfig.from_dict({**self.base, **values}, where=f"{self._where()} with {_describe(values)}")

    def space_json(self) -> str:
        return json.dumps({d.name: d.written() for d in self.space})

    def _where(self) -> str:
        return f"search '{self.base.get(C.PARAM_EXPERIMENT, RunConfig.experiment)}'"


def _ask_tell_grid_sampler(search_space: dict, seed: int):
    """Optuna's GridSampler, except that telling the grid's last trial does not stop the study.

    GridSampler.after_trial calls study.stop(), which raises RuntimeError outside study.optimize(); a search
    asks and tells (its trials train together in a stack), and the file's check keeps trials within the grid.
    """
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return AskTellGridSampler(search_space, seed=seed)


# ---- reading the section ----

def load_search(path, section, base: dict) -> SearchSpec:
    """The `search:` section of the grid file at `path`, checked whole; `base` already has its experiment."""
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: search should be a mapping with keys {', '.join(SEARCH_KEYS)}")
    for key in section:
        if key not in SEARCH_KEYS:
            raise ConfigError(f"{path}: search.{key}: unknown key (known: {', '.join(SEARCH_KEYS)})")
    settings = _settings(path, {**DEFAULTS, **section})
    space = _space(path, section.get(SPACE))
    spec = SearchSpec(space=space, base=dict(base), **settings)
    _check_sampler(path, spec)
    _check_held_out(path, base)
    _check_configs(path, base, space)
    return spec


def _settings(path, section: dict) -> dict:
    trials, sampler, pruner, metric, seed = (section.get(k) for k in (TRIALS, SAMPLER, PRUNER, METRIC, SEED))
    if trials is None:
        raise ConfigError(f"{path}: search.trials is missing: how many configs should the search train?")
    if not _is_int(trials) or trials < 1:
        raise ConfigError(f"{path}: search.trials={trials!r} should be a positive integer")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{path}: search.sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"{path}: search.pruner={pruner!r} is not one of {', '.join(PRUNERS)}")
    if not isinstance(metric, str) or metric not in C.SEARCH_METRICS:
        raise ConfigError(f"{path}: search.metric={metric!r}: a search optimises a validation metric "
                          f"({', '.join(C.SEARCH_METRICS)}), never the test set")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"{path}: search.seed={seed!r} should be an integer >= 0")
    return {TRIALS: trials, SAMPLER: sampler, PRUNER: pruner, METRIC: metric, SEED: seed}


def _space(path, space) -> tuple[Dimension, ...]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: search.space should map training options to distributions, "
                          f"e.g. {{lr: {{log_uniform: [0.1, 10]}}}}")
    return tuple(_dimension(f"{path}: search.space.{name}", name, raw) for name, raw in space.items())


def _dimension(where: str, name, raw) -> Dimension:
    if name not in OPTIONS:
        raise ConfigError(f"{where}: not a training option (known: {', '.join(OPTIONS)})")
    if name in FIXED_OPTIONS:
        raise ConfigError(f"{where}: {name} cannot be searched: {FIXED_OPTIONS[name]}")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f"{where}={raw!r} should be one distribution, e.g. {{log_uniform: [0.1, 10]}} "
                          f"(kinds: {', '.join(KINDS)})")
    (kind, value), = raw.items()
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution {kind!r} (known: {', '.join(KINDS)})")
    if kind == CHOICE:
        return Dimension(name, kind, choices=_choices(f"{where}.{kind}", value))
    low, high = _range(f"{where}.{kind}", kind, value)
    return Dimension(name, kind, low, high)


def _range(where: str, kind: str, value) -> tuple:
    if not isinstance(value, list) or len(value) != 2 or not all(_is_number(v) for v in value):
        hint = " (YAML reads 1e-3 as text: write 0.001 or 1.0e-3)" if isinstance(value, list) and any(
            isinstance(v, str) and _parses_as_float(v) for v in value) else ""
        raise ConfigError(f"{where}={value!r} should be [low, high], two finite numbers{hint}")
    low, high = value
    if kind == INT and not (_is_int(low) and _is_int(high)):
        raise ConfigError(f"{where}={value!r} should be two integers")
    if low >= high:
        raise ConfigError(f"{where}={value!r} is empty or reversed: low must be below high")
    if kind == LOG_UNIFORM and low <= 0:
        raise ConfigError(f"{where}={value!r}: a log scale needs low > 0")
    return low, high


def _choices(where: str, value) -> tuple:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}={value!r} should be a non-empty list of options")
    options = []
    for option in value:
        if isinstance(option, list) and all(_is_scalar(v) for v in option):
            option = tuple(option)
        elif not _is_scalar(option):
            raise ConfigError(f"{where}: option {option!r} should be a number, a string, true/false, null "
                              f"or a list of those")
        if option in options:
            raise ConfigError(f"{where}: option {_show(option)} is given twice")
        options.append(option)
    return tuple(options)


def _check_sampler(path, spec: SearchSpec) -> None:
    if spec.sampler == "grid":
        for d in spec.space:
            if d.kind != CHOICE:
                raise ConfigError(f"{path}: search.sampler=grid needs every dimension to be a choice list; "
                                  f"search.space.{d.name} is {d.kind}")
        points = math.prod(len(d.choices) for d in spec.space)
        if spec.trials > points:  # past the last point Optuna's GridSampler would train configs again
            raise ConfigError(f"{path}: search.trials={spec.trials} is more than the {points} points of the grid: "
                              f"set trials to at most {points}")
    if spec.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise ConfigError(f"{path}: search.sampler=cmaes needs the cmaes package: pip install cmaes")


def _check_held_out(path, base: dict) -> None:
    if not base.get(C.PARAM_VAL_SIZE):
        raise ConfigError(f"{path}: base.val_size: a search needs held-out images to score its trials on: "
                          f"set base.val_size (e.g. 10000)")


def _check_configs(path, base: dict, space: tuple[Dimension, ...]) -> None:
    """Every option and range end makes a valid config: alone over base, then with the others at their first."""
    searched = {d.name for d in space}  # the space overrides these, so base's own values never train
    RunConfig.from_dict({k: v for k, v in base.items() if k not in searched}, where=f"{path}: search base")
    firsts = {d.name: d.first() for d in space}
    for d in space:
        others = {k: v for k, v in firsts.items() if k != d.name}
        for label, value in d.ends():
            where = f"{path}: search.space.{d.name} {label} {_show(value)}"
            RunConfig.from_dict({**base, d.name: value}, where=where)
            if others:
                RunConfig.from_dict({**base, **others, d.name: value}, where=f"{where} with {_describe(others)}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(float(value))  # Optuna takes floats: nan, inf and huge ints have no place in a range
    except OverflowError:
        return False


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
