"""The C kernel is as safe to call as a torch op: every argument is checked before it runs, a bad one is a
one-line error with nothing computed; the step path a run is tagged with is the code that takes its steps;
and a machine that cannot build the kernel says so once when training starts."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mlflow import MlflowClient

from training import contract as C
from training.config import RunConfig
from training.engine import native_kernel
from training.engine.steps import make_stepper, step_path
from training.nets import data as mnist
from training.nets.models import StackedNet, init_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_kernel = pytest.mark.skipif(native_kernel.kernel() is None,
                                  reason=f"the fused SGD kernel is {native_kernel.why_not()}")
NOTICE = "fused SGD kernel: "


def _args(rows=50, k=3, b=4, steps=2, sizes=(784, 16, 10)):
    """A valid call: table, n_in, idx, weights, lr, raw, activation, loss, update."""
    gen = torch.Generator().manual_seed(0)
    table = torch.rand(rows, sizes[0] + 1 + sizes[-1], generator=gen)
    weights = [torch.randn(k, out, fan_in + 1, generator=gen) * 0.1 for fan_in, out in zip(sizes, sizes[1:])]
    idx = torch.randint(0, rows, (steps, k * b), generator=gen)
    return [table, sizes[0], idx, weights, torch.full((k,), 0.5), torch.zeros(steps, len(weights), k),
            "sigmoid", "mse", True]


def _bad(case: str) -> list:
    args = _args()
    table, _, idx, weights, lr, raw = args[:6]
    broken = {
        "idx past the table": lambda: idx.__setitem__((1, 5), table.shape[0]),
        "negative idx": lambda: idx.__setitem__((0, 0), -1),
        "idx far out": lambda: idx.__setitem__((0, 0), 10**12),
        "weights[1] shape": lambda: weights.__setitem__(1, torch.zeros(3, 10, 16)),  # fan_in 15, not 16
        "table width": lambda: args.__setitem__(0, table[:, :-1].contiguous()),
        "raw shape": lambda: args.__setitem__(5, torch.zeros(2, 2, 2)),
        "idx columns": lambda: args.__setitem__(2, idx[:, :-1].contiguous()),
        "table dtype": lambda: args.__setitem__(0, table.double()),
        "idx dtype": lambda: args.__setitem__(2, idx.int()),
        "lr dtype": lambda: args.__setitem__(4, lr.double()),
        "weights[0] not contiguous": lambda: weights.__setitem__(0, weights[0].transpose(1, 2).contiguous().transpose(1, 2)),
        "idx not contiguous": lambda: args.__setitem__(2, torch.cat([idx, idx], 1)[:, ::2]),
        "table not a tensor": lambda: args.__setitem__(0, table.numpy()),
        "table not on the CPU": lambda: args.__setitem__(0, table.to("meta")),
        "activation": lambda: args.__setitem__(6, "softplus"),
    }
    broken[case]()
    return args


NAMES = {"idx past the table": "idx", "negative idx": "idx", "idx far out": "idx", "weights[1] shape": "weights[1]",
         "table width": "table", "raw shape": "raw", "idx columns": "idx", "table dtype": "table", "idx dtype": "idx",
         "lr dtype": "lrs", "weights[0] not contiguous": "weights[0]", "idx not contiguous": "idx",
         "table not a tensor": "table", "table not on the CPU": "table", "activation": "activation"}


@needs_kernel
def test_a_valid_call_runs_and_updates_the_weights():
    args = _args()
    before = [w.clone() for w in args[3]]
    native_kernel.kernel().steps(*args)
    assert all(not torch.equal(w, b) for w, b in zip(args[3], before))
    assert bool((args[5] > 0).all())


@needs_kernel
@pytest.mark.parametrize("case", NAMES)
def test_a_bad_argument_is_a_one_line_error_naming_it_and_nothing_is_computed(case):
    args = _bad(case)
    weights, raw = [w.clone() for w in args[3]], args[5].clone()
    with pytest.raises((TypeError, ValueError)) as caught:
        native_kernel.kernel().steps(*args)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{NOTICE}{NAMES[case]} "), message
    assert "must" in message and "got" in message, message
    assert all(torch.equal(w, before) for w, before in zip(args[3], weights)) and torch.equal(args[5], raw)


@needs_kernel
def test_an_out_of_range_index_is_refused_in_a_process_a_wild_read_would_crash():
    """Unchecked, 10**12 rows past the table is a segfault, not a silent pass; checked, a one-line error."""
    code = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, "tests")
        from test_native_kernel import _bad
        from training.engine import native_kernel
        args = _bad("idx far out")
        before = [w.clone() for w in args[3]]
        try:
            native_kernel.kernel().steps(*args)
        except ValueError as e:
            print(e)
        print(all(torch.equal(w, b) for w, b in zip(args[3], before)))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"{NOTICE}idx must index the table's 50 rows") and lines[1] == "True", out.stdout


def _compiled_vector_path() -> str:
    """What the compiler itself says -march=native turns on, asked apart from the kernel's own report."""
    macros = subprocess.run([native_kernel.compiler(), "-march=native", "-dM", "-E", "-"], input="",
                            capture_output=True, text=True, check=True).stdout.split()
    return "native-avx512" if "__AVX512F__" in macros else "native-avx2" if "__AVX2__" in macros else "native"


CASES = {"plain sgd": RunConfig(sizes=(784, 16, 10)), "momentum": RunConfig(sizes=(784, 16, 10), momentum=0.9),
         "adam": RunConfig(sizes=(784, 16, 10), optimizer="adam", lr=0.01),
         "cnn": RunConfig(arch="cnn", activation="relu", loss="cross_entropy")}


@pytest.mark.parametrize("case", CASES)
def test_step_path_is_the_code_that_takes_the_steps(case, monkeypatch):
    config = CASES[case]
    calls = []
    if native_kernel.kernel() is not None:  # count the kernel's calls, then run it as shipped
        shipped = native_kernel.FusedKernel.steps
        monkeypatch.setattr(native_kernel.FusedKernel, "steps", lambda self, *a: calls.append(1) or shipped(self, *a))
    data = mnist.load(train_size=200)
    x, y = data.train_x.reshape(200, -1), data.train_y
    net = StackedNet(config, [init_params(config, torch.Generator().manual_seed(s)) for s in (0, 1)])
    stepper = make_stepper([config, config], net, x, y)
    stepper.steps(torch.randint(0, 200, (2, 2 * config.batch_size)), torch.zeros(2, len(net.layers), 2))
    path = step_path(config)
    assert path in C.STEP_PATHS
    assert (path != "torch") == bool(calls), (path, calls)
    if calls:
        assert path == _compiled_vector_path()
    if case == "plain sgd" and native_kernel.compiler():
        assert path != "torch"  # with a compiler, the kernel is built and the plain SGD MLP takes it


def test_one_config_with_momentum_sends_its_cohort_and_its_step_path_to_torch():
    plain, moving = RunConfig(sizes=(784, 16, 10)), RunConfig(sizes=(784, 16, 10), momentum=0.5)
    assert step_path(plain, [plain, moving]) == "torch"


def test_switched_off_the_kernel_is_not_taken_and_step_path_says_torch():
    code = ("from training.config import RunConfig; from training.engine.steps import step_path, fallback_notice; "
            "c = RunConfig(); print(step_path(c)); print(fallback_notice([c]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, native_kernel.ENV: "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["torch", f"{NOTICE}off ({native_kernel.ENV}=0); training takes the PyTorch "
                                                "path (about 2x slower)"]


def _no_compiler_env(tmp_path) -> dict:
    """No C compiler on PATH, no $CC, and an empty cache, so no kernel built before is found either."""
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CC", native_kernel.ENV)}
    return {**env, "PATH": str(bare), "XDG_CACHE_HOME": str(tmp_path / "cache")}


NO_COMPILER = (f"{NOTICE}not built (no C compiler (cc or gcc) on PATH); training takes the PyTorch path "
               "(about 2x slower)")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_grid_without_a_compiler_says_once_that_it_takes_the_pytorch_path(tmp_path, optimizer):
    grid = tmp_path / "tiny.yaml"
    grid.write_text(textwrap.dedent(f"""
        experiment: fallback
        base: {{sizes: [784, 16, 10], activation: sigmoid, loss: mse, optimizer: {optimizer}, lr: 0.5,
                epochs: 1, train_size: 100, batch_size: 10}}
        grid: {{seed: [0, 1]}}
    """))
    env = _no_compiler_env(tmp_path)
    out = subprocess.run([sys.executable, "-m", "training.grid", str(grid)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    notices = [line for line in out.stderr.splitlines() if line.startswith(NOTICE)]
    assert notices == ([NO_COMPILER] if optimizer == "sgd" else []), out.stderr[-3000:]
    assert not list((tmp_path / "cache").rglob("*.so"))
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = [r for r in client.search_runs([client.get_experiment_by_name("fallback").experiment_id])
            if C.TAG_GRID_PARENT not in r.data.tags]
    assert len(runs) == 2 and all(r.data.tags.get(C.TAG_STEP_PATH) == "torch" for r in runs), \
        [r.data.tags.get(C.TAG_STEP_PATH) for r in runs]


def test_train_without_a_compiler_says_once_that_it_takes_the_pytorch_path(tmp_path):
    env = _no_compiler_env(tmp_path)
    out = subprocess.run([sys.executable, "-m", "training.train", "--sizes", "784,16,10", "--epochs", "1",
                          "--train-size", "100", "--experiment", "fallback"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [line for line in out.stderr.splitlines() if line.startswith(NOTICE)] == [NO_COMPILER], out.stderr[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("fallback").experiment_id])
    assert run.data.tags.get(C.TAG_STEP_PATH) == "torch"
