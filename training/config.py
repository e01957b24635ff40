"""One run's settings: a flat dataclass, validated, hashed, and logged whole as MLflow params.

The train CLI and grid files use the same names (snake_case here, --kebab-case
on the command line), so a grid entry is exactly a set of CLI options.
"""
import hashlib
import json
from dataclasses import asdict, dataclass, fields

from training.errors import UserError

ACTIVATIONS = ("sigmoid", "relu", "tanh")
LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam")
ARCHS = ("mlp", "cnn")
MNIST_TRAIN_SIZE = 60_000
INPUT_SIZE, N_CLASSES = 784, 10

# Settings that name a run rather than change what it computes: left out of the config hash.
NON_TRAINING_KEYS = ("experiment", "run_name")


class ConfigError(UserError):
    pass


@dataclass(frozen=True)
class RunConfig:
    arch: str = "mlp"
    sizes: tuple[int, ...] = (784, 30, 10)
    activation: str = "sigmoid"
    loss: str = "mse"
    init_std: float | None = None  # None: PyTorch's default init; else weights ~ N(0, init_std), biases 0
    optimizer: str = "sgd"
    lr: float = 3.0
    momentum: float = 0.0
    batch_size: int = 10
    epochs: int = 30
    seed: int = 0
    train_size: int = MNIST_TRAIN_SIZE
    snapshot_every: int = 1
    experiment: str = "mnist"
    run_name: str | None = None

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "RunConfig":
        """Build and validate from plain values (YAML or CLI); errors name `where`, the key and the value."""
        known = {f.name: f for f in fields(cls)}
        clean = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(known)})")
            clean[key] = _coerce(key, value, where)
        config = cls(**clean)
        config.validate(where)
        return config

    def validate(self, where: str = "config") -> None:
        def bad(key, why):
            raise ConfigError(f"{where}: {key}={getattr(self, key)!r} {why}")

        _choice(self, "arch", ARCHS, where)
        _choice(self, "activation", ACTIVATIONS, where)
        _choice(self, "loss", LOSSES, where)
        _choice(self, "optimizer", OPTIMIZERS, where)
        if self.arch == "mlp":
            s = self.sizes
            if len(s) < 2 or s[0] != INPUT_SIZE or s[-1] != N_CLASSES:
                bad("sizes", f"must start at {INPUT_SIZE} and end at {N_CLASSES}, e.g. 784,30,10")
            if any(n < 1 for n in s):
                bad("sizes", "must all be positive")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if self.init_std is not None and not self.init_std > 0:
            bad("init_std", "must be > 0 (or left out for PyTorch's default init)")
        if not 1 <= self.train_size <= MNIST_TRAIN_SIZE:
            bad("train_size", f"must be between 1 and {MNIST_TRAIN_SIZE}")
        if not 1 <= self.batch_size <= self.train_size:
            bad("batch_size", f"must be between 1 and train_size ({self.train_size})")
        if self.epochs < 1:
            bad("epochs", "must be at least 1")
        if self.seed < 0:
            bad("seed", "must be >= 0")
        if self.snapshot_every < 1:
            bad("snapshot_every", "must be at least 1")
        if not self.experiment:
            bad("experiment", "must not be empty")

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
        return f"{base} {self.activation} {self.optimizer} lr={self.lr:g} bs={self.batch_size}"

    def training_dict(self) -> dict:
        d = asdict(self)
        for key in NON_TRAINING_KEYS:
            d.pop(key)
        if self.arch == "cnn":
            d.pop("sizes")
        return d

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.training_dict(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def as_params(self) -> dict[str, str]:
        """Every setting, as MLflow params (strings).  None becomes 'default'."""
        d = asdict(self)
        d["sizes"] = ",".join(map(str, self.sizes)) if self.arch == "mlp" else "cnn"
        d["run_name"] = self.display_name
        return {k: ("default" if v is None else str(v)) for k, v in d.items()}


def _choice(config, key, choices, where):
    value = getattr(config, key)
    if value not in choices:
        raise ConfigError(f"{where}: {key}={value!r} is not one of {', '.join(choices)}")


def _coerce(key: str, value, where: str):
    """Accept what YAML and argparse produce; reject anything else with a one-line error."""
    def bad(expected):
        raise ConfigError(f"{where}: {key}={value!r} should be {expected}")

    if key == "sizes":
        if isinstance(value, str):
            try:
                value = [int(p) for p in value.split(",")]
            except ValueError:
                bad("a comma-separated list of integers, e.g. 784,30,10")
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            bad("a list of integers, e.g. [784, 30, 10]")
        return tuple(value)
    if key in ("lr", "momentum", "init_std"):
        if value is None and key == "init_std":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad("a number")
        return float(value)
    if key in ("batch_size", "epochs", "seed", "train_size", "snapshot_every"):
        if isinstance(value, bool) or not isinstance(value, int):
            bad("an integer")
        return value
    if key == "run_name" and value is None:
        return None
    if not isinstance(value, str):
        bad("a string")
    return value
