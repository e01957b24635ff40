"""A run's description in words: its config, how it ended, its accuracy and a short health summary.

MLflow shows it as the run's description (the `mlflow.note.content` tag, markdown), so a
run reads well in the MLflow UI without our dashboard.  Everything here is computed from
the run's config and the metrics it logged, epoch by epoch; nothing imports torch.
"""
import math

from training import contract as C
from training.config import MNIST_TRAIN_SIZE, RunConfig
from training.nets.architecture import N_TEST

UNTRAINED = 0  # the epoch of the untrained network

History = list[tuple[int, dict[str, float]]]  # (epoch, its logged metrics), in the order logged
Predictions = tuple[int, list[int]]  # (epoch, how many test images its last snapshot predicts as each class)


def config_in_words(config: RunConfig) -> str:
    """One paragraph: the network, its cost and init, the optimizer, and the data it saw."""
    if config.arch == "cnn":
        net = f"A small CNN (two 3x3 conv layers with max-pooling, then a linear layer) with {config.activation} units"
    else:
        net = f"An MLP {'-'.join(map(str, config.sizes))} with {config.activation} hidden units"
    cost = ("Nielsen's quadratic cost on sigmoid outputs" if config.loss == "mse"
            else "softmax outputs with cross-entropy")
    if config.nielsen_init:
        init = "weights and biases drawn from N(0, 1), as Nielsen's network.py"
    elif config.init_std is not None:
        init = f"weights drawn from N(0, {config.init_std:g}), biases 0"
    else:
        init = "PyTorch's default init"
    momentum = f" with momentum {config.momentum:g}" if config.momentum else ""
    opt = "Adam" if config.optimizer == "adam" else f"SGD{momentum}"
    data = f"Trained on the first {config.train_size:,} of the {MNIST_TRAIN_SIZE:,} training images"
    if config.val_size:
        data += f", validated on the last {config.val_size:,}"
    return (f"{net}, {cost}, {init}. {opt}, learning rate {config.lr:g}, batch {config.batch_size}, "
            f"{_epochs(config.epochs)}, seed {config.seed}. {data}; tested on the {N_TEST:,} test images.")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def outcome(status: str, reason: str | None, history: History) -> str:
    """How the run ended and its accuracy at the end: the last logged epoch's."""
    if not history:
        return f"**{status}** before its first epoch was logged" + (f": {reason}." if reason else ".")
    epoch, last = history[-1]
    acc = f"test accuracy **{_pct(last[C.TEST_ACC])}**" if C.TEST_ACC in last else "no test accuracy"
    if C.VAL_ACC in last:
        best_epoch, best = max(((e, m[C.VAL_ACC]) for e, m in history if C.VAL_ACC in m), key=lambda p: p[1])
        acc += f", validation {_pct(last[C.VAL_ACC])} (best {_pct(best)} at epoch {best_epoch})"
    if status == C.STATUS_FINISHED:  # a reason here says why it finished early (a search's pruner)
        return f"**FINISHED** after {_epochs(epoch)}" + (f", {reason}" if reason else "") + f": {acc}."
    what = reason or ("stopped by Ctrl-C or SIGTERM" if status == C.STATUS_KILLED else "ended")
    return f"**{status}**: {what}. At epoch {epoch}, the last it logged: {acc}."


def _layers(last: dict[str, float], prefix: str) -> dict[str, float]:
    return {key[len(prefix) + 1:]: v for key, v in last.items() if key.startswith(prefix + "/")}


def health(config: RunConfig, history: History, predictions: Predictions | None = None) -> list[str]:
    """Plain facts from what the run logged: dead or saturated units, classes it never predicts (from its
    last snapshot), the loss's course, the train-test gap and the gradient norms, at the last logged epoch.
    Empty before any epoch was logged."""
    if not history:
        return []
    epoch, last = history[-1]
    lines = []
    dead = _layers(last, C.DEAD_FRACTION_PREFIX)
    if dead:
        word = ("dead (0 on every test image)" if config.activation == "relu" else
                "saturated on every test image")
        lines.append(f"Units {word}: " + ", ".join(f"{layer} {100 * v:.0f} %" for layer, v in dead.items()) + ".")
    if predictions is not None:
        at, counts = predictions
        never = [str(c) for c, n in enumerate(counts) if n == 0]
        lines.append(f"Never predicts {'digit' if len(never) == 1 else 'digits'} {', '.join(never)} on the test "
                     f"images (epoch {at})." if never else f"Predicts all {len(counts)} classes on the test images.")
    first = dict(history[0][1]) if history[0][0] == UNTRAINED else {}
    if C.TRAIN_LOSS in last and C.TRAIN_LOSS in first and epoch != UNTRAINED:
        course = "fell" if last[C.TRAIN_LOSS] < first[C.TRAIN_LOSS] else "did not fall"
        lines.append(f"Train loss {course}: {first[C.TRAIN_LOSS]:.4g} untrained, {last[C.TRAIN_LOSS]:.4g} "
                     f"at epoch {epoch}.")
    if C.TRAIN_ACC in last and C.TEST_ACC in last:
        gap = 100 * (last[C.TRAIN_ACC] - last[C.TEST_ACC])
        lines.append(f"Train accuracy {_pct(last[C.TRAIN_ACC])} vs test {_pct(last[C.TEST_ACC])} "
                     f"(gap {gap:+.2f} pp).")
    norms = {layer: v for layer, v in _layers(last, C.GRAD_NORM_PREFIX).items() if math.isfinite(v)}
    if norms:
        lines.append("Mean gradient norm in the last epoch: " +
                     ", ".join(f"{layer} {v:.3g}" for layer, v in norms.items()) + ".")
    return lines


def describe(config: RunConfig, history: History, status: str, reason: str | None,
             predictions: Predictions | None = None) -> str:
    """The run's whole description, markdown: the config, the outcome, and the health summary."""
    parts = [config_in_words(config), outcome(status, reason, history)]
    facts = health(config, history, predictions)
    if facts:
        parts.append("Health at the end:\n" + "\n".join(f"- {line}" for line in facts))
    return "\n\n".join(parts)


def describe_grid(name: str, file: str, n_configs: int, n_pending: int, status: str, reason: str | None,
                  n_finished: int | None) -> str:
    """A grid's parent run: which file, how many configs, and how this invocation ended."""
    text = (f"Grid **{name}** from `{file}`: {n_configs} configs, {n_configs - n_pending} already FINISHED "
            f"before this run, {n_pending} trained here as nested runs.")
    if n_finished is not None:
        text += f" {n_finished} of those {n_pending} FINISHED."
    return text + f"\n\n**{status}**" + (f": {reason}." if reason else ".")
