"""A built-in run's final model as MLflow stores it, and back again: no pickle either way.

MLflow's PyTorch flavor costs a trainer about 2.5 s on its first log in a process (it imports
torch.export, some 1,400 modules, and checks every installed package for the requirements): longer
than a 100-image run trains.  A built-in model needs none of that, since its config rebuilds the
module (training.nets.models.to_module).  So the logged model holds:
- the weights as a plain .npz: float32 arrays in PyTorch layout, keyed by state_dict name (fc1.weight);
- the run's config as JSON (RunConfig.as_params());
- MLflow's MLmodel file, with a python_function flavor whose loader is this module, and the
  requirements as the pins this trainer runs with.
`mlflow.pyfunc.load_model(uri).predict(images)` works wherever this package imports; `load(uri)`
gives the nn.Module.

A model read back is untrusted (any store, anyone's files): the config must be a valid RunConfig, and
each weight's .npy header must have the shape the config's layers give it before its data is read
(training.nets.snapshot_reader).  A refusal is one line naming the file and the array.
"""
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training import contract as C
from training.config import INPUT_SIZE, N_CLASSES, ConfigError, RunConfig
from training.location import tracking_uri
from training.nets.architecture import layers_of, n_params
from training.nets.models import to_module
from training.nets.snapshot_reader import SnapshotError, read_snapshot

MAX_CONFIG_BYTES = 64_000  # a config is some 400 bytes of JSON
MAX_WEIGHT_BYTES = 1 << 30  # our largest net holds 0.1 M parameters (0.4 MB); this ceiling stops a planted config
HEADROOM_BYTES = 100_000  # zip and .npy headers


class SavedModelError(ValueError):
    """A logged model that is not what its own config says; the message is one line for a person."""


def weight_shapes(config: RunConfig) -> dict[str, tuple[int, ...]]:
    """Each state_dict key of the config's module and its shape, input to output."""
    shapes = {}
    for layer in layers_of(config):
        shapes[f"{layer.name}.weight"], shapes[f"{layer.name}.bias"] = layer.weight_shape, (layer.units,)
    return shapes


def write(directory: Path, config: RunConfig, params: dict[str, torch.Tensor], mlflow_model) -> None:
    """Write the model's files into `directory`; `mlflow_model` (an mlflow.models.Model carrying the
    logged model's ids) gets the python_function flavor and the signature, and is saved as MLmodel."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.types import Schema, TensorSpec
    np.savez(directory / C.MODEL_WEIGHTS_FILE,
             **{key: params[key].detach().cpu().numpy().astype(np.float32) for key in weight_shapes(config)})
    (directory / C.MODEL_CONFIG_FILE).write_text(json.dumps(config.as_params(), indent=1) + "\n")
    # The pins this trainer runs with, stated: inferring them would scan every installed package.
    pins = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
    (directory / C.MODEL_REQUIREMENTS_FILE).write_text("\n".join(pins) + "\n")
    (directory / C.MODEL_PYTHON_ENV_FILE).write_text(
        f"python: {platform.python_version()}\nbuild_dependencies:\n- pip\ndependencies:\n"
        f"- -r {C.MODEL_REQUIREMENTS_FILE}\n")
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, python_env=C.MODEL_PYTHON_ENV_FILE)
    mlflow_model.signature = ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, INPUT_SIZE))]),
                                            Schema([TensorSpec(np.dtype(np.float32), (-1, N_CLASSES))]))
    mlflow_model.save(str(directory / MLMODEL_FILE_NAME))


def load(model_uri: str) -> nn.Module:
    """The module of a logged model (models:/<model id>, models:/<name>/<version>, its artifact URI or a
    local folder), in eval mode; SavedModelError if its files are not what its config says."""
    import mlflow.artifacts
    with tempfile.TemporaryDirectory(prefix="saved-model-") as tmp:
        for name in (C.MODEL_CONFIG_FILE, C.MODEL_WEIGHTS_FILE):  # only these: the folder may hold anything
            try:
                root = _artifact_root(model_uri)
                mlflow.artifacts.download_artifacts(artifact_uri=f"{root.rstrip('/')}/{name}", dst_path=tmp,
                                                    tracking_uri=tracking_uri())
            except Exception as e:  # noqa: BLE001 (MLflow raises its own, OSError or HTTP errors: one line for each)
                raise SavedModelError(f"{model_uri}: no {name} to read ({str(e).splitlines()[0][:160]}); "
                                      f"is it a model logged by MNIST Lab's trainer?") from None
        return read(Path(tmp))


def _artifact_root(model_uri: str) -> str:
    """Where a models:/ URI's files are (MLflow resolves those only for whole folders); any other URI as it is."""
    from mlflow.tracking import MlflowClient
    if not model_uri.startswith("models:/"):
        return model_uri
    name, _, version = model_uri[len("models:/"):].strip("/").partition("/")
    # the configured store, by name: MLflow's process-wide default may be another store a caller set earlier
    client = MlflowClient(tracking_uri())
    if version:
        return client.get_model_version_download_uri(name, version)
    return client.get_logged_model(name).artifact_location


def read(directory: Path) -> nn.Module:
    """The module from a local folder holding the model's files."""
    config = _config(directory / C.MODEL_CONFIG_FILE)
    weights = _weights(directory / C.MODEL_WEIGHTS_FILE, config)
    return to_module(config, {key: torch.from_numpy(a) for key, a in weights.items()})


def _config(path: Path) -> RunConfig:
    name = C.MODEL_CONFIG_FILE
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise SavedModelError(f"{name} is {path.stat().st_size:,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    try:
        params = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise SavedModelError(f"{name} is not JSON ({str(e)[:80]})") from None
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise SavedModelError(f"{name} is not an object of strings, as RunConfig.as_params() writes")
    try:
        config = RunConfig.from_params(params, where=name)
    except ConfigError as e:
        raise SavedModelError(str(e)) from None
    if n_params(config) * 4 > MAX_WEIGHT_BYTES:
        raise SavedModelError(f"{name}: sizes={params.get(C.PARAM_SIZES)!r} makes {n_params(config):,} parameters, "
                              f"more than any MNIST net here can hold ({MAX_WEIGHT_BYTES // 4:,})")
    return config


def _weights(path: Path, config: RunConfig) -> dict[str, np.ndarray]:
    import zipfile
    name, shapes = C.MODEL_WEIGHTS_FILE, weight_shapes(config)
    try:
        with zipfile.ZipFile(path) as archive:
            held = [m[:-len(".npy")] for m in archive.namelist()]
    except (zipfile.BadZipFile, OSError) as e:
        raise SavedModelError(f"{name} is not a readable .npz ({str(e)[:80]})") from None
    if extra := [k for k in held if k not in shapes]:
        raise SavedModelError(f"{name} holds {extra[0]!r}, which the config's layers have no place for "
                              f"(expected {', '.join(shapes)})")
    try:
        arrays = read_snapshot(path, shapes, n_params(config) * 8 + HEADROOM_BYTES)
    except SnapshotError as e:
        raise SavedModelError(f"{name}: {e}") from None
    if missing := [k for k in shapes if k not in arrays]:
        raise SavedModelError(f"{name} has no {missing[0]} (shape {shapes[missing[0]]}), which the config's layers need")
    for key, a in arrays.items():
        if a.dtype != np.float32:
            raise SavedModelError(f"{name}: {key} is {a.dtype}, expected float32")
    return arrays


class _Pyfunc:
    """What mlflow.pyfunc.load_model wraps: predict takes (N, 784) float32 images and returns the logits."""

    def __init__(self, module: nn.Module):
        self.module = module

    def predict(self, model_input, params=None):
        with torch.no_grad():
            return self.module(torch.as_tensor(np.asarray(model_input, dtype=np.float32))).numpy()


def _load_pyfunc(data_path: str) -> _Pyfunc:
    """MLflow's loader-module entry point (see mlflow.pyfunc's docs on custom flavors): the model's folder."""
    return _Pyfunc(read(Path(data_path)))
