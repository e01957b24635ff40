"""The final model log: a grid's run gets its model, cheaply, and Ctrl-C during that log leaves no half-logged model.

The model is MLflow's logged model written through its public API (training.nets.saved_model): plain .npz
weights and the config as JSON, no pickle.  It loads back through `saved_model.load` and through
`mlflow.pyfunc.load_model`, and both compute what the run's last snapshot's weights compute in numpy.
Whatever a model folder holds is untrusted: each planted fault below is refused in one line naming the
file and the array.

The interrupt tests send real signals to a real grid while the model is PENDING: between its creation
and its finalization.  That log now takes some 50 ms, too short to aim a signal at, so the grid's child
process pauses 3 s before writing the model's files (only there: the log itself runs as shipped).
"""
import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from training import contract as C
from training.config import RunConfig
from training.location import tracking_uri
from training.nets import saved_model
from training.nets.data import load
from training.nets.models import init_params, to_module

GRID = """experiment: model-log
base: {sizes: [784, 30, 10], activation: sigmoid, loss: mse, batch_size: 10, epochs: 1, train_size: 100}
runs: [{lr: 3.0}]
"""

# The grid CLI as `python -m training.grid FILE` runs it, but for a pause before the model's files are written.
SLOW_WRITE = r"""
import runpy, sys, time
from training.nets import saved_model
write = saved_model.write
def slow_write(*args, **kwargs):
    time.sleep(3)
    return write(*args, **kwargs)
saved_model.write = slow_write
sys.argv = ["python -m training.grid", sys.argv[1]]
runpy.run_module("training.grid", run_name="__main__", alter_sys=True)
"""


def start_grid(tmp_path, paused: bool = False) -> tuple[subprocess.Popen, MlflowClient]:
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    client = MlflowClient(tracking_uri())
    client.search_experiments()  # create the schema first: two processes migrating one file race
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = ["-c", SLOW_WRITE, str(grid)] if paused else ["-m", "training.grid", str(grid)]
    with open(tmp_path / "grid.out", "w") as out, open(tmp_path / "grid.err", "w") as err:  # a pipe can stall
        proc = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, stdout=out, stderr=err, text=True)
    return proc, client


def child_run(client):
    exp = client.get_experiment_by_name("model-log")
    runs = [r for r in client.search_runs([exp.experiment_id]) if C.TAG_PARENT_RUN_ID in r.data.tags]
    assert len(runs) == 1
    return runs[0]


def models_of(client, run_id):
    exp_id = client.get_run(run_id).info.experiment_id
    return client.search_logged_models([exp_id], filter_string=f"source_run_id = '{run_id}'")


def wait_for_a_pending_model(proc, client, tmp_path, timeout=300):
    """Block until the grid has begun the model log and not finished it; the run id."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "grid.err").read_text()[-2000:]
        exp = client.get_experiment_by_name("model-log")
        if exp is not None:
            for model in client.search_logged_models([exp.experiment_id]):
                if str(model.status) == "PENDING":
                    return model.source_run_id
        time.sleep(0.02)
    raise AssertionError("the grid never began its model log")


@pytest.mark.slow
def test_a_grid_logs_its_final_model_loadable_without_pickle_and_computing_the_last_snapshot_s_net(tmp_path):
    proc, client = start_grid(tmp_path)
    assert proc.wait(timeout=600) == 0, (tmp_path / "grid.err").read_text()[-2000:]
    run = child_run(client)
    assert run.info.status == "FINISHED"
    (model,) = models_of(client, run.info.run_id)
    assert str(model.status) == "READY" and model.name == C.MODEL_NAME
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model.model_id, 1)]  # after epoch 1
    assert model.params == run.data.params

    x = load().test_x[:500]
    with torch.no_grad():
        logits = saved_model.load(f"models:/{model.model_id}")(x).numpy()
    mlflow.set_tracking_uri(tracking_uri())  # pyfunc resolves models:/ in MLflow's process-wide store
    predicted = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(x.numpy())
    # The reference: the run's last snapshot, which holds the final weights, through numpy.
    with np.load(client.download_artifacts(run.info.run_id, C.snapshot_path(1)), allow_pickle=False) as z:
        w1, b1, w2, b2 = (z[k].astype(np.float64) for k in (C.weight_key("fc1"), C.bias_key("fc1"),
                                                                C.weight_key("fc2"), C.bias_key("fc2")))
    hidden = 1 / (1 + np.exp(-(x.numpy().astype(np.float64) @ w1.T + b1)))
    np.testing.assert_allclose(logits, hidden @ w2.T + b2, atol=1e-4)
    np.testing.assert_array_equal(predicted, logits)

    # Its files: plain numbers, the config the run logged, and the signature MLflow would infer by running it.
    files = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(tmp_path / "m"))
    with np.load(os.path.join(files, C.MODEL_WEIGHTS_FILE), allow_pickle=False) as z:
        assert {k: (z[k].dtype, z[k].shape) for k in z.files} == {
            "fc1.weight": (np.float32, (30, 784)), "fc1.bias": (np.float32, (30,)),
            "fc2.weight": (np.float32, (10, 30)), "fc2.bias": (np.float32, (10,))}
        np.testing.assert_array_equal(z["fc2.weight"], w2.astype(np.float32))
    config = json.loads(open(os.path.join(files, C.MODEL_CONFIG_FILE)).read())
    assert config == {k: run.data.params[k] for k in C.CONFIG_PARAMS}
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert info.signature == infer_signature(x.numpy()[:2], predicted[:2])


def test_the_first_model_log_in_a_process_imports_next_to_nothing(tmp_path):
    """What made the old log cost 2.5 s on a 100-image run: its first call imported some 1,400 modules
    (torch.export's and MLflow's PyTorch flavor's).  This one imports a few dozen of MLflow's."""
    script = r"""
import sys, time, torch
from training.config import RunConfig
from training.nets.models import init_params
from training.tracking import mlflow_sink
config = RunConfig(experiment="cheap")
c = mlflow_sink.client()
run_id = c.create_run(mlflow_sink.experiment_id(c, "cheap")).info.run_id
before, start = set(sys.modules), time.perf_counter()
mlflow_sink.log_model(run_id, config, init_params(config, torch.Generator().manual_seed(0)))
print(time.perf_counter() - start, " ".join(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, *imported = out.stdout.split()
    assert len(imported) < 100 and not [m for m in imported if m.startswith(("torch", "mlflow.pytorch"))], imported
    print(f"first model log: {float(seconds):.3f} s, {len(imported)} modules imported")


@pytest.mark.parametrize("config", [RunConfig(sizes=(784, 16, 16, 10), activation="relu"),
                                    RunConfig(arch="cnn", activation="tanh")], ids=["mlp", "cnn"])
def test_the_written_model_reads_back_as_the_module_it_was_and_through_pyfunc(tmp_path, config):
    params = init_params(config, torch.Generator().manual_seed(3))
    saved_model.write(tmp_path, config, params, Model())
    x = torch.rand(7, 784)
    with torch.no_grad():
        want = to_module(config, params)(x).numpy()
        np.testing.assert_array_equal(saved_model.read(tmp_path)(x).numpy(), want)
        np.testing.assert_array_equal(saved_model.load(str(tmp_path))(x).numpy(), want)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(str(tmp_path)).predict(x.numpy()), want)
    assert (tmp_path / C.MODEL_REQUIREMENTS_FILE).read_text().split() == [
        f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"torch=={torch.__version__.split('+')[0]}"]


def _planted(tmp_path, fault):
    config = RunConfig(sizes=(784, 16, 10))
    saved_model.write(tmp_path, config, init_params(config, torch.Generator().manual_seed(0)), Model())
    weights_path, config_path = tmp_path / C.MODEL_WEIGHTS_FILE, tmp_path / C.MODEL_CONFIG_FILE
    with np.load(weights_path, allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files}
    params = json.loads(config_path.read_text())
    kind, value = fault
    if kind == "weights":
        weights.update(value)
        np.savez(weights_path, **weights)
    elif kind == "drop":
        np.savez(weights_path, **{k: v for k, v in weights.items() if k != value})
    elif kind == "config":
        config_path.write_text(json.dumps(params | value))
    else:
        config_path.write_text(value)
    return tmp_path


@pytest.mark.parametrize("fault, message", [
    (("weights", {"fc1.weight": np.zeros((16, 785), np.float32)}),
     r"^weights\.npz: fc1\.weight is float32 \(16, 785\), expected shape \(16, 784\)"),
    (("weights", {"fc1.bias": np.zeros(16, np.float64)}), r"^weights\.npz: fc1\.bias is float64, expected float32$"),
    (("weights", {"fc1.bias": np.array([None] * 16, dtype=object)}),
     r"^weights\.npz: fc1\.bias holds Python objects \(a pickle\).*never unpickled$"),
    (("weights", {"fc3.weight": np.zeros((10, 10), np.float32)}),
     r"^weights\.npz holds 'fc3\.weight', which the config's layers have no place for"),
    (("drop", "fc2.bias"), r"^weights\.npz has no fc2\.bias \(shape \(10,\)\), which the config's layers need$"),
    (("config", {C.PARAM_SIZES: "784,16,16,10"}),
     r"^weights\.npz: fc2\.weight is float32 \(10, 16\), expected shape \(16, 16\)"),
    (("config", {C.PARAM_SIZES: "784,100000,100000,10"}), r"^config\.json: sizes='784,100000,100000,10' makes"),
    (("config", {C.PARAM_ACTIVATION: "gelu"}), r"^config\.json: activation='gelu' is not one of"),
    (("text", "[1, 2"), r"^config\.json is not JSON"),
    (("text", '{"arch": 1}'), r"^config\.json is not an object of strings"),
], ids=["shape", "dtype", "pickle", "extra", "missing", "other-config", "huge-config", "bad-config", "not-json",
        "not-strings"])
def test_a_model_folder_that_is_not_what_its_config_says_is_refused_in_one_line(tmp_path, fault, message):
    folder = _planted(tmp_path, fault)
    with pytest.raises(saved_model.SavedModelError, match=message) as refused:
        saved_model.read(folder)
    assert "\n" not in str(refused.value)


def test_loading_what_is_no_model_of_ours_says_so_in_one_line(tmp_path):
    with pytest.raises(saved_model.SavedModelError, match=r"no config\.json to read .*logged by MNIST Lab's trainer"):
        saved_model.load(str(tmp_path))


@pytest.mark.slow
def test_one_ctrl_c_during_the_model_log_still_logs_the_model_and_finishes_the_run(tmp_path):
    proc, client = start_grid(tmp_path, paused=True)
    run_id = wait_for_a_pending_model(proc, client, tmp_path)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = (tmp_path / "grid.err").read_text()
    assert "Traceback" not in err, err[-2000:]
    assert client.get_run(run_id).info.status == "FINISHED"
    (model,) = models_of(client, run_id)
    assert str(model.status) == "READY"
    saved_model.load(f"models:/{model.model_id}")


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_model_log_ends_the_run_killed_with_no_half_logged_model(tmp_path):
    proc, client = start_grid(tmp_path, paused=True)
    run_id = wait_for_a_pending_model(proc, client, tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    start = time.time()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert time.time() - start < 30  # ended, not hung on the model log
    err = (tmp_path / "grid.err").read_text()
    assert "Traceback" not in err and "rerun" in err, err[-2000:]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "interrupted" in run.data.tags[C.TAG_FAILURE_REASON]
    assert [str(m.status) for m in models_of(client, run_id)] == ["FAILED"]  # begun, and said to have failed
