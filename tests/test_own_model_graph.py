"""A run from the user's own loop logs its model as data (training.own_loop.model_graph), and the views that rerun
the network use it: the rebuilt model computes what the user's model computes, with gradients, feature
visualisation is the one the architecture built directly gives, and a planted artifact runs nothing.
Tiny real trainings (64 MNIST images, one epoch), a real SQLite store, no mocks."""
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from torch import nn
from torchvision import transforms

from dashboard.analytics.feature_vis import maximise
from dashboard.loaders import deep_neurons as D
from dashboard.loaders import logged_activations, own_model, run_data
from dashboard.loaders.neuron_target import resolve
from dashboard.read import cache, store
from dashboard.read.store import StoreError
from tests.conftest import sqlite_uri
from training import contract as C
from training.examples import pytorch_mnist, writeup_d
from training.nets import graph_model as G
from training.nets.data import load, load_test_images
from training.own_loop import logged_run


class ResidualNet(nn.Module):
    """The model of issue 28: a stride-2 conv and F.relu, Linears in a ModuleList and F.gelu, a LayerNorm, a
    residual branch through torch.tanh, an nn.Sequential head with nn.GELU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2)
        self.fcs = nn.ModuleList([nn.Linear(8 * 13 * 13, 32), nn.Linear(32, 32)])
        self.norm = nn.LayerNorm(32)
        self.branch = nn.Linear(32, 32)
        self.head = nn.Sequential(nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 10))

    def forward(self, x):
        x = F.relu(self.conv(x)).flatten(1)
        for fc in self.fcs:
            x = F.gelu(fc(x))
        x = self.norm(x)
        x = x + torch.tanh(self.branch(x))
        return self.head(x)


NORMALIZE = transforms.Normalize((pytorch_mnist.MEAN,), (pytorch_mnist.STD,))
MODELS = {"writeup_d": (writeup_d.Net, None), "pytorch_mnist": (pytorch_mnist.Net, NORMALIZE),
          "residual": (ResidualNet, None)}


def train_tiny(model, preprocess=None, images=64, name=None) -> str:
    """log_epoch(0), one epoch of 64 images in batches of 16, log_epoch(1): the run id."""
    data = load(train_size=images)
    prep = preprocess or (lambda x: x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with logged_run(model, run_name=name, preprocess=preprocess) as run:
        run.log_epoch(0)
        model.train()
        for i in range(0, images, 16):
            x, y = data.train_x[i:i + 16].reshape(-1, 1, 28, 28), data.train_y[i:i + 16]
            opt.zero_grad()
            F.cross_entropy(model(prep(x)), y).backward()
            opt.step()
        run.log_epoch(1, train_loss=1.0)
    return run.run_id


_TRAINED: dict = {}  # once per test session, for this module and tests/test_browser_own_model.py


def trained_models(tmp_path_factory) -> tuple[str, dict]:
    """The three models trained tiny into one store: (uri, {name: (run id, trained model)}).  About 40 s on 2
    cores, nearly all of it logged_run's two passes over the 10,000 test images with pytorch/examples' CNN."""
    if not _TRAINED:
        uri = sqlite_uri(tmp_path_factory.mktemp("own-model"))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_TRACKING_URI", uri)
            runs = {}
            for name, (cls, preprocess) in MODELS.items():
                torch.manual_seed(0)
                model = cls()
                runs[name] = (train_tiny(model, preprocess, name=name), model.eval())
        _TRAINED.update(uri=uri, runs=runs)
    return _TRAINED["uri"], _TRAINED["runs"]


@pytest.fixture(scope="module")
def own_store(tmp_path_factory):
    return trained_models(tmp_path_factory)


@pytest.fixture
def in_own_store(own_store, monkeypatch):
    import mlflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", own_store[0])
    # logged_run points MLflow's process-wide URI at its store, and the models trained once per session: tests
    # that ran since may have pointed it elsewhere, and a bare MlflowClient() follows it, not the variable.
    mlflow.set_tracking_uri(own_store[0])
    cache.clear()
    return own_store[1]


def _inputs(n=6) -> torch.Tensor:
    images, _ = load_test_images()
    return images[:n].float().div(255).reshape(n, 784)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_rebuilt_model_computes_what_the_users_model_computes_with_gradients(in_own_store, name):
    rid, model = in_own_store[name]
    assert {Path(f.path).name for f in MlflowClient().list_artifacts(rid, C.OWN_MODEL_DIR)} == \
        {C.OWN_MODEL_GRAPH_FILE, C.MODEL_WEIGHTS_FILE}
    net = own_model.module_at(resolve(rid, 1))
    preprocess = MODELS[name][1] or (lambda x: x)
    x = _inputs()
    with torch.no_grad():
        want = model(preprocess(x.reshape(-1, 1, 28, 28)))
    torch.testing.assert_close(net(x), want, rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_()
    net(xg)[:, 3].sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_one_image_through_the_graph_gives_the_units_the_run_logged(in_own_store, name):
    """Layer n of the dashboard is layer n of training.own_loop: the rebuilt units equal the logged ones."""
    t = resolve(in_own_store[name][0], 1)
    logged = logged_activations.hidden_units(t)
    for index in (0, 7):
        d = D.one_image_data(t, index)
        assert len(d.acts) == len(logged)
        for have, want in zip(d.acts, logged):
            np.testing.assert_allclose(have, want[index], rtol=2e-3, atol=2e-3)  # float16 as logged


def _direct_objective(model, preprocess, layer_name, unit):
    """A unit's pre-activation computed on the architecture itself, with a forward hook on its layer."""
    module = dict(model.named_modules())[layer_name]

    def objective(x):
        seen = {}
        handle = module.register_forward_hook(lambda m, i, o: seen.update(out=o))
        try:
            model(preprocess(x.reshape(-1, 1, 28, 28)))
        finally:
            handle.remove()
        pre = seen["out"]
        return pre[:, unit].mean(dim=(-2, -1)) if pre.dim() == 4 else pre[:, unit]
    return objective


@pytest.mark.parametrize("name, layer, unit", [("residual", 1, 3), ("residual", 4, 5), ("writeup_d", 2, 7),
                                               ("pytorch_mnist", 3, 11)])
def test_feature_visualisation_equals_the_one_of_the_architecture_built_directly(in_own_store, name, layer, unit):
    rid, trained = in_own_store[name]
    cls, preprocess = MODELS[name]
    model = cls()
    model.load_state_dict(trained.state_dict())  # the same weights into the same architecture, built here
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    t = resolve(rid, layer, None, unit)
    want = maximise(_direct_objective(model, preprocess or (lambda x: x), t.layer_name, unit))
    got = D.feature_vis(t, unit)
    np.testing.assert_allclose(got.image, want.image, atol=1e-4)  # the picture the unit page shows
    assert got.objective == pytest.approx(want.objective, rel=1e-4, abs=1e-4)
    # Every start: exact without a preprocess.  With Normalize, the graph applies it as x * (1/std) - mean/std,
    # which rounds differently from (x - mean) / std in the last bit, and 100 steps of ascent through ReLUs
    # can move a losing start by a few per cent.
    tolerance = 1e-4 if preprocess is None else 5e-2
    np.testing.assert_allclose(got.objectives, want.objectives, rtol=tolerance, atol=1e-4)


@pytest.mark.parametrize("name", ["writeup_d", "residual"])
def test_integrated_gradients_on_an_own_run_are_complete_within_2_percent(in_own_store, name):
    t = resolve(in_own_store[name][0], 1)
    for ig_map, diff, gap in D.attributions(t, 0).values():
        assert ig_map.shape == (28, 28)
        assert abs(ig_map.sum() - diff) <= 0.02 * abs(diff) + 1e-6
        assert abs(gap) <= 0.02 * abs(diff) + 1e-6


def test_the_landscape_of_an_own_run_ends_at_its_models_training_loss(in_own_store):
    rid, model = in_own_store["residual"]
    ls = run_data.run_landscape(rid)
    assert ls.loss.shape == (len(ls.betas), len(ls.alphas)) and np.isfinite(ls.loss).all()
    x, y = run_data.train_prefix(ls.n_images)
    with torch.no_grad():
        want = float(F.cross_entropy(model(x.reshape(-1, 1, 28, 28)), y))
    assert ls.path_loss[-1] == pytest.approx(want, rel=1e-4)
    assert np.allclose(ls.path[-1], 0)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 8), nn.Linear(8, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(h if h.sum() > 0 else -h)  # data-dependent control flow: fx cannot trace it


class WithPReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(784, 8), nn.PReLU(), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("cls, why", [(Branchy, "torch.fx cannot trace Branchy"),
                                      (WithPReLU, "module type PReLU is not one the model graph can describe")])
def test_a_model_the_graph_cannot_describe_keeps_its_logged_views_and_says_why_once(cls, why, capfd):
    torch.manual_seed(0)
    rid = train_tiny(cls())
    err = capfd.readouterr().err
    assert err.count(why) == 1
    run = MlflowClient().get_run(rid)
    assert run.info.status == C.STATUS_FINISHED and why in run.data.tags[C.TAG_OWN_MODEL_MISSING]
    assert not MlflowClient().list_artifacts(rid, C.OWN_MODEL_DIR)
    t = resolve(rid, 1, None, 0)
    assert logged_activations.hidden_units(t)[0].shape == (10_000, 8)  # the activation-only views stay
    with pytest.raises(StoreError) as e:
        D.feature_vis(t, 0)
    assert why in str(e.value) and "\n" not in str(e.value)


# ---- planted artifacts: refused in one line, nothing run ------------------------------------------------

class _Payload:
    """What a pickle would run on load: creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _planted_cases(marker: Path):
    def graph_calls(target, op="call_function"):
        def plant(g, w):
            g["nodes"].insert(1, {"name": "evil", "op": op, "target": target,
                                  "args": {"tuple": [f"touch {marker}"]}, "kwargs": {}})
        return plant

    def module_type(g, w):
        g["modules"]["fc1"]["type"] = "os.system"

    def huge_linear(g, w):
        g["modules"]["fc1"]["settings"] |= {"in_features": 10**9, "out_features": 10**9}

    def pickled_weights(g, w):
        np.savez(w, **{C.OWN_INPUT_SCALE: np.array([_Payload(marker)], dtype=object),
                       C.OWN_INPUT_SHIFT: np.zeros((1, 28, 28), np.float32)})
        g["weights_sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
        g["input_shape"] = [1]

    def oversized(g, w):
        g["padding"] = "x" * (G.MAX_GRAPH_BYTES + 1)

    def swapped_weights(g, w):
        np.savez(w, **{C.OWN_INPUT_SCALE: np.full((1, 28, 28), 2.0, np.float32),
                       C.OWN_INPUT_SHIFT: np.zeros((1, 28, 28), np.float32)})

    return {"os.system": (graph_calls("os.system"), "not on the allowlist"),
            "builtins.eval": (graph_calls("builtins.eval"), "not on the allowlist"),
            "method __reduce__": (graph_calls("__reduce__", "call_method"), "not on the allowlist"),
            "module type os.system": (module_type, "not on the allowlist"),
            "Linear(1e9, 1e9)": (huge_linear, "parameters, more than any MNIST net"),
            "pickled npz": (pickled_weights, "a pickle"),
            "oversized graph": (oversized, "refused before reading"),
            "weights swapped after the graph": (swapped_weights, "sha256 differs")}


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """One tiny run and a copy of its model files as logged: (uri, run id, folder of the originals)."""
    uri = sqlite_uri(tmp_path_factory.mktemp("planted"))
    originals = tmp_path_factory.mktemp("originals")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        torch.manual_seed(0)
        rid = train_tiny(writeup_d.Net(), images=16)
        MlflowClient().download_artifacts(rid, C.OWN_MODEL_DIR, str(originals))
    return uri, rid, originals / C.OWN_MODEL_DIR


@pytest.mark.parametrize("case", list(_planted_cases(Path("x"))))
def test_a_planted_model_artifact_is_refused_in_one_line_and_runs_nothing(planted_store, monkeypatch, tmp_path, case):
    uri, rid, originals = planted_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    marker = tmp_path / "ran"
    plant, expected = _planted_cases(marker)[case]
    here = tmp_path / "files"
    shutil.copytree(originals, here)
    graph, weights = here / C.OWN_MODEL_GRAPH_FILE, here / C.MODEL_WEIGHTS_FILE
    body = json.loads(graph.read_text())
    plant(body, weights)
    graph.write_text(json.dumps(body))
    for path in (weights, graph):
        MlflowClient().log_artifact(rid, str(path), C.OWN_MODEL_DIR)  # over the run's own files
    cache.clear()
    with pytest.raises(StoreError) as e:
        own_model.module_at(resolve(rid, 1))
    message = str(e.value)
    assert expected in message and "\n" not in message, message
    assert not marker.exists()
    assert pickle.dumps(_Payload(marker))  # what np.load(allow_pickle=True) would have run: a real payload


def test_the_planted_runs_own_files_rebuild_it(planted_store, monkeypatch):
    """The control for the test above: with the files as logged, the same run's model is rebuilt."""
    uri, rid, originals = planted_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in (C.MODEL_WEIGHTS_FILE, C.OWN_MODEL_GRAPH_FILE):
        MlflowClient().log_artifact(rid, str(originals / name), C.OWN_MODEL_DIR)
    cache.clear()
    assert own_model.module_at(resolve(rid, 1))(_inputs(2)).shape == (2, 10)


def test_a_run_stopped_by_ctrl_c_logs_no_model_graph_and_says_so_where_a_view_would_rerun_it():
    """The graph is logged as a run ends well: a stopped run keeps its epochs and its activation-only views."""
    torch.manual_seed(0)
    model = writeup_d.Net()
    with pytest.raises(KeyboardInterrupt):
        with logged_run(model) as run:
            run.log_epoch(0)
            raise KeyboardInterrupt
    assert MlflowClient().get_run(run.run_id).info.status == C.STATUS_KILLED
    assert not MlflowClient().list_artifacts(run.run_id, C.OWN_MODEL_DIR)
    t = resolve(run.run_id, 1, None, 0)
    assert logged_activations.hidden_units(t)[0].shape == (10_000, 16)
    with pytest.raises(StoreError, match="not its model graph") as e:
        D.feature_vis(t, 0)
    assert "\n" not in str(e.value)
