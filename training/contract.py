"""The tracking contract: every name a run logs to MLflow.

The training side writes these names and the dashboard reads them; both import
this module, so a name lives in exactly one place.  The README's "Tracking
contract" section documents the same names for people.
"""

# Per-epoch metrics.  Step N is the state after N epochs; step 0 is the untrained net.
TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
TEST_LOSS = "test_loss"
TEST_ACC = "test_acc"
EPOCH_SECONDS = "epoch_seconds"
EPOCH_METRICS = (TRAIN_LOSS, TRAIN_ACC, TEST_LOSS, TEST_ACC, EPOCH_SECONDS)

# Per-layer, per-epoch metrics: f"{prefix}/{layer_name}".
GRAD_NORM_PREFIX = "grad_norm"
DEAD_FRACTION_PREFIX = "dead_fraction"


def grad_norm_key(layer: str) -> str:
    return f"{GRAD_NORM_PREFIX}/{layer}"


def dead_fraction_key(layer: str) -> str:
    return f"{DEAD_FRACTION_PREFIX}/{layer}"


# Params beyond the training options themselves.
PARAM_ARCH = "arch"
PARAM_N_PARAMS = "n_params"
PARAM_DATASET = "dataset"
PARAM_LAYERS = "layers"  # comma-separated layer names, input to output
PARAM_SHA256_PREFIX = "sha256."  # one param per data file: sha256.<file name>

# Artifacts.
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_EVERY = "snapshot_every"
MODEL_NAME = "model"


def snapshot_path(epoch: int) -> str:
    """Artifact path of one epoch's snapshot, relative to the run's artifact root."""
    return f"{SNAPSHOT_DIR}/epoch_{epoch:04d}.npz"


def snapshot_epoch(artifact_path: str) -> int | None:
    """The epoch a snapshot artifact path belongs to, or None if it is not a snapshot."""
    name = artifact_path.rsplit("/", 1)[-1]
    if not (name.startswith("epoch_") and name.endswith(".npz")):
        return None
    digits = name[len("epoch_"):-len(".npz")]
    return int(digits) if digits.isdigit() else None


# Keys inside a snapshot .npz (numpy, no pickle).  Layer names come from the model.
def weight_key(layer: str) -> str:
    return f"weight/{layer}"


def bias_key(layer: str) -> str:
    return f"bias/{layer}"


def act_hist_key(layer: str) -> str:
    return f"act_hist/{layer}"  # counts, one per bin


def act_edges_key(layer: str) -> str:
    return f"act_edges/{layer}"  # bin edges, len(counts) + 1


CONF_EDGES = "conf/edges"
CONF_HIST_CORRECT = "conf/correct"
CONF_HIST_INCORRECT = "conf/incorrect"
PRED_CLASS = "pred/class"  # uint8, one per test image, in test-set order
PRED_CONFIDENCE = "pred/confidence"  # float32 softmax (or sigmoid) score of the predicted class

# Tags.
TAG_FAILURE_REASON = "failure_reason"
TAG_CONFIG_HASH = "grid.config_hash"
TAG_GRID_NAME = "grid.name"
TAG_GRID_PARENT = "grid.parent"  # "true" on a grid's parent run
TAG_PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own: nests runs in its UI
TAG_RUN_NAME = "mlflow.runName"
# On experiments: MLflow 3's UI tells model-training experiments from GenAI ones by this tag.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def neuron_name_tag(layer: int, unit: int) -> str:
    return f"neuron.{layer}.{unit}.name"


def neuron_note_tag(layer: int, unit: int) -> str:
    return f"neuron.{layer}.{unit}.note"


DATASET_NAME = "mnist"
