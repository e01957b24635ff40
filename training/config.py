"""One run's settings: a flat dataclass, validated, hashed, and logged whole as MLflow params.

The train CLI and grid files use the same names (snake_case here, --kebab-case
on the command line), so a grid entry is exactly a set of CLI options.
"""
import hashlib
import json
from dataclasses import asdict, dataclass, fields

from training import contract as C
from training.errors import UserError

ACTIVATIONS = ("sigmoid", "relu", "tanh")
LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam")
ARCHS = ("mlp", "cnn")
NIELSEN_INIT = "nielsen"  # network.py's init: every weight and bias from N(0, 1)
INITS = (NIELSEN_INIT,)  # beside None: PyTorch's default init, or N(0, init_std) weights with init_std
MNIST_TRAIN_SIZE = 60_000
INPUT_SIZE, N_CLASSES = 784, 10

# Settings that name a run rather than change what it computes: left out of the config hash.
NON_TRAINING_KEYS = C.NAMING_PARAMS
# Options added after grids were first run: left out of the hash at their defaults, so the configs
# that predate them keep their hash and a rerun still finds them FINISHED.
LATER_OPTION_DEFAULTS = {C.PARAM_INIT: None, C.PARAM_VAL_SIZE: 0}
# Params a run must carry for its model to be rebuilt; the rest default (older runs lack newer options).
MODEL_PARAMS = (C.PARAM_ARCH, C.PARAM_SIZES, C.PARAM_ACTIVATION, C.PARAM_LOSS)


class ConfigError(UserError):
    pass


@dataclass(frozen=True)
class RunConfig:
    arch: str = "mlp"
    sizes: tuple[int, ...] = (784, 30, 10)
    activation: str = "sigmoid"
    loss: str = "mse"
    init_std: float | None = None  # None: PyTorch's default init; else weights ~ N(0, init_std), biases 0
    init: str | None = None  # "nielsen": weights and biases ~ N(0, 1), as Nielsen's network.py
    optimizer: str = "sgd"
    lr: float = 3.0
    momentum: float = 0.0
    batch_size: int = 10
    epochs: int = 30
    seed: int = 0
    train_size: int = MNIST_TRAIN_SIZE  # the first train_size images; at most MNIST_TRAIN_SIZE - val_size
    val_size: int = 0  # the last val_size of the 60,000 training images, held out for validation
    snapshot_every: int = 1
    experiment: str = "mnist"
    run_name: str | None = None

    def __post_init__(self):
        # The CNN's shape is fixed, so its `sizes` means nothing: one canonical value keeps
        # from_params(as_params()) exact and cohort keys equal.
        if self.arch == "cnn" and self.sizes != ():
            object.__setattr__(self, C.PARAM_SIZES, ())
        # Held-out images never train: train_size shrinks to what is left, so `val_size: 10000` alone
        # gives Nielsen's 50,000/10,000 split (from_dict refuses an explicit train_size that overlaps).
        if 0 < self.val_size < MNIST_TRAIN_SIZE and self.train_size > MNIST_TRAIN_SIZE - self.val_size:
            object.__setattr__(self, C.PARAM_TRAIN_SIZE, MNIST_TRAIN_SIZE - self.val_size)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "RunConfig":
        """Build and validate from plain values (YAML or CLI); errors name `where`, the key and the value."""
        known = {f.name: f for f in fields(cls)}
        clean = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(known)})")
            clean[key] = _coerce(known[key], value, where)
        _check_split(clean, where)
        config = cls(**clean)
        config.validate(where)
        return config

    @classmethod
    def from_params(cls, params: dict[str, str], where: str = "params") -> "RunConfig":
        """The exact inverse of `as_params`: the config a run was trained with, from its MLflow params.

        Extra params (n_params, layers, sha256.*) are ignored and options a run predates take their
        defaults; a run without the model params (another tool's) raises ConfigError naming them.  Runs
        logged before arch_label existed carry the label in `arch` (mlp-784-30-10-sigmoid): read as mlp.
        """
        missing = [k for k in MODEL_PARAMS if k not in params]
        if missing:
            raise ConfigError(f"{where}: no {', '.join(missing)} param: not a run of MNIST Lab's trainer")
        values = {}
        for f in fields(cls):
            if f.name not in params:
                continue
            raw = params[f.name]
            values[f.name] = None if raw == C.DEFAULT_VALUE and f.default is None else _from_text(f, raw, where)
        arch = str(values[C.PARAM_ARCH])
        values[C.PARAM_ARCH] = "cnn" if arch.startswith("cnn") or params[C.PARAM_SIZES] == C.CNN_SIZES_VALUE \
            else "mlp" if arch.startswith("mlp") else arch
        if values[C.PARAM_ARCH] == "cnn":
            values.pop(C.PARAM_SIZES)
        return cls.from_dict(values, where)

    def validate(self, where: str = "config") -> None:
        for key, choices in ((C.PARAM_ARCH, ARCHS), (C.PARAM_ACTIVATION, ACTIVATIONS), (C.PARAM_LOSS, LOSSES),
                             (C.PARAM_OPTIMIZER, OPTIMIZERS)):
            if getattr(self, key) not in choices:
                raise ConfigError(f"{where}: {key}={getattr(self, key)!r} is not one of {', '.join(choices)}")
        s = self.sizes
        checks = [
            (C.PARAM_SIZES, self.arch != "mlp" or (len(s) >= 2 and s[0] == INPUT_SIZE and s[-1] == N_CLASSES),
             f"must start at {INPUT_SIZE} and end at {N_CLASSES}, e.g. 784,30,10"),
            (C.PARAM_SIZES, all(n >= 1 for n in s), "must all be positive"),
            (C.PARAM_LR, self.lr > 0, "must be > 0"),
            (C.PARAM_MOMENTUM, 0 <= self.momentum < 1, "must be in [0, 1)"),
            (C.PARAM_INIT_STD, self.init_std is None or self.init_std > 0,
             "must be > 0 (or left out for PyTorch's default init)"),
            (C.PARAM_INIT, self.init is None or self.init in INITS,
             f"is not one of {', '.join(INITS)} (leave it out for PyTorch's default init)"),
            (C.PARAM_INIT_STD, self.init is None or self.init_std is None,
             f"does not combine with init={self.init!r}, which draws weights and biases from N(0, 1)"),
            (C.PARAM_VAL_SIZE, 0 <= self.val_size < MNIST_TRAIN_SIZE, f"must be between 0 and {MNIST_TRAIN_SIZE - 1}"),
            (C.PARAM_TRAIN_SIZE, 1 <= self.train_size <= MNIST_TRAIN_SIZE - self.val_size,
             f"must be between 1 and {MNIST_TRAIN_SIZE - self.val_size} ({MNIST_TRAIN_SIZE} training images"
             f" less val_size={self.val_size})" if self.val_size else f"must be between 1 and {MNIST_TRAIN_SIZE}"),
            (C.PARAM_BATCH_SIZE, 1 <= self.batch_size <= self.train_size,
             f"must be between 1 and train_size ({self.train_size})"),
            (C.PARAM_EPOCHS, self.epochs >= 1, "must be at least 1"),
            (C.PARAM_SEED, self.seed >= 0, "must be >= 0"),
            (C.PARAM_SNAPSHOT_EVERY, self.snapshot_every >= 1, "must be at least 1"),
            (C.PARAM_EXPERIMENT, bool(self.experiment), "must not be empty"),
        ]
        for key, ok, why in checks:  # in order: the first problem is the one reported
            if not ok:
                raise ConfigError(f"{where}: {key}={getattr(self, key)!r} {why}")

    @property
    def nielsen_init(self) -> bool:
        return self.init == NIELSEN_INIT

    @property
    def arch_name(self) -> str:
        if self.arch == "cnn":
            return f"cnn-{self.activation}"
        return "mlp-" + "-".join(map(str, self.sizes)) + f"-{self.activation}"

    @property
    def display_name(self) -> str:
        if self.run_name:
            return self.run_name
        base = "cnn" if self.arch == "cnn" else "mlp-" + "-".join(map(str, self.sizes))
        init = f" init={self.init}" if self.init else ""
        return f"{base} {self.activation} {self.optimizer} lr={self.lr:g} bs={self.batch_size}{init}"

    def training_dict(self) -> dict:
        d = asdict(self)
        for key in NON_TRAINING_KEYS:
            d.pop(key)
        for key, default in LATER_OPTION_DEFAULTS.items():
            if d[key] == default:
                d.pop(key)
        if self.arch == "cnn":
            d.pop(C.PARAM_SIZES)
        return d

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.training_dict(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def as_params(self) -> dict[str, str]:
        """Every setting, as MLflow params (strings).  None becomes 'default'; `from_params` inverts it."""
        d = asdict(self)
        d[C.PARAM_SIZES] = ",".join(map(str, self.sizes)) if self.arch == "mlp" else C.CNN_SIZES_VALUE
        return {k: (C.DEFAULT_VALUE if v is None else str(v)) for k, v in d.items()}


def _check_split(values: dict, where: str) -> None:
    """An explicit train_size must leave the held-out images alone; left out, it takes what is left."""
    train, val = values.get(C.PARAM_TRAIN_SIZE), values.get(C.PARAM_VAL_SIZE) or 0
    if train is not None and isinstance(val, int) and 0 < val < MNIST_TRAIN_SIZE and train + val > MNIST_TRAIN_SIZE:
        raise ConfigError(f"{where}: train_size={train!r} overlaps the {val} held-out images (val_size={val}): "
                          f"use at most {MNIST_TRAIN_SIZE - val}, or leave train_size out to train on all of them")


def _kind(field) -> tuple[str, bool]:
    """A field's value kind (tuple, float, int or str) from its declared type, and whether it may be None."""
    text = str(field.type)
    optional = "None" in text
    for kind in ("tuple", "float", "int"):
        if kind in text:
            return kind, optional
    return "str", optional


def _from_text(field, text: str, where: str):
    """A param's string back to the value as_params wrote (the field's type decides how)."""
    kind, _ = _kind(field)
    try:
        return int(text) if kind == "int" else float(text) if kind == "float" else text
    except ValueError:
        raise ConfigError(f"{where}: {field.name}={text!r} should be a number") from None


def _coerce(field, value, where: str):
    """Accept what YAML and argparse produce; reject anything else with a one-line error."""
    def bad(expected):
        raise ConfigError(f"{where}: {field.name}={value!r} should be {expected}")

    kind, optional = _kind(field)
    if value is None and optional:
        return None
    if kind == "tuple":
        if isinstance(value, str):
            try:
                value = [int(p) for p in value.split(",")]
            except ValueError:
                bad("a comma-separated list of integers, e.g. 784,30,10")
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            bad("a list of integers, e.g. [784, 30, 10]")
        return tuple(value)
    if isinstance(value, bool) or (kind == "float" and not isinstance(value, (int, float))):
        bad("a number" if kind == "float" else "an integer" if kind == "int" else "a string")
    if kind == "float":
        return float(value)
    if kind == "int" and not isinstance(value, int):
        bad("an integer")
    if kind == "str" and not isinstance(value, str):
        bad("a string")
    return value
