"""The tracking contract: every name a run logs to MLflow.

The training side writes these names and the dashboard reads them; both import
this module, so a name lives in exactly one place.  The README's "Tracking
contract" section documents the same names for people, and
tests/test_structure.py checks that no module outside this one spells a name
below as a string literal.

Names are grouped at the bottom (METRICS, PARAMS, TAGS, ARTIFACTS, STATUSES,
and the prefixes of the per-layer and per-unit names); that grouping is what
the test reads.
"""

# ---- per-epoch metrics: step N is the state after N epochs; step 0 is the untrained net ----
TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
TEST_LOSS = "test_loss"
TEST_ACC = "test_acc"
EPOCH_SECONDS = "epoch_seconds"
VAL_LOSS = "val_loss"  # on the held-out last val_size training images, when val_size > 0
VAL_ACC = "val_acc"
EPOCH_METRICS = (TRAIN_LOSS, TRAIN_ACC, TEST_LOSS, TEST_ACC, EPOCH_SECONDS)
# The running best, logged beside test_acc (training.engine.running_best): the highest finite test_acc up to this
# step, and the epoch that first reached it.  MLflow's search returns only latest values, so these let the
# runs page rank 10,000 runs by their best without reading 10,000 histories.
BEST_TEST_ACC = "best_test_acc"
BEST_EPOCH = "best_epoch"

# Per-layer, per-epoch metrics: f"{prefix}/{layer_name}".
GRAD_NORM_PREFIX = "grad_norm"
DEAD_FRACTION_PREFIX = "dead_fraction"


def grad_norm_key(layer: str) -> str:
    return f"{GRAD_NORM_PREFIX}/{layer}"


def dead_fraction_key(layer: str) -> str:
    return f"{DEAD_FRACTION_PREFIX}/{layer}"


# Per-layer run summaries of the hidden units at the run's last snapshot, logged once when a run ends
# (at that snapshot's epoch as step) or by training.backfill_summaries: f"{prefix}.{layer}.{field}".
# Dots, not slashes, so MLflow's filter syntax takes them bare: metrics.units.fc1.class_selective > 5.
UNIT_SUMMARY_PREFIX = "units"
# counts, counts, counts, mean SI; critical: units whose ablation alone costs >= 1 point of test accuracy
UNIT_SUMMARY_FIELDS = ("class_selective", "feature_selective", "dead", "mean_si", "critical")


def unit_summary_key(layer: str, field: str) -> str:
    assert field in UNIT_SUMMARY_FIELDS, field
    return f"{UNIT_SUMMARY_PREFIX}.{layer}.{field}"


def unit_summary_parts(key: str) -> tuple[str, str] | None:
    """(layer, field) of a unit-summary metric key, else None: the inverse of unit_summary_key."""
    head, _, rest = key.partition(".")
    layer, _, field = rest.rpartition(".")
    return (layer, field) if head == UNIT_SUMMARY_PREFIX and layer and field in UNIT_SUMMARY_FIELDS else None


# ---- params ----
# The training options: one param per RunConfig field, under the field's own name.  config.py's
# dataclass declares them in this order (a test keeps the two equal).
PARAM_ARCH = "arch"  # "mlp" or "cnn"
PARAM_SIZES = "sizes"  # "784,30,10"; "cnn" for the CNN
PARAM_ACTIVATION = "activation"
PARAM_LOSS = "loss"
PARAM_INIT_STD = "init_std"
PARAM_INIT = "init"  # "default" (PyTorch's, or N(0, init_std) with init_std) or "nielsen": weights and biases N(0, 1)
PARAM_OPTIMIZER = "optimizer"
PARAM_LR = "lr"
PARAM_MOMENTUM = "momentum"
PARAM_BATCH_SIZE = "batch_size"
PARAM_EPOCHS = "epochs"
PARAM_SEED = "seed"
PARAM_TRAIN_SIZE = "train_size"
PARAM_VAL_SIZE = "val_size"  # the last val_size of the 60,000 training images, held out; 0: none
PARAM_SNAPSHOT_EVERY = "snapshot_every"
PARAM_EXPERIMENT = "experiment"
PARAM_RUN_NAME = "run_name"
CONFIG_PARAMS = (PARAM_ARCH, PARAM_SIZES, PARAM_ACTIVATION, PARAM_LOSS, PARAM_INIT_STD, PARAM_INIT, PARAM_OPTIMIZER,
                 PARAM_LR, PARAM_MOMENTUM, PARAM_BATCH_SIZE, PARAM_EPOCHS, PARAM_SEED, PARAM_TRAIN_SIZE, PARAM_VAL_SIZE,
                 PARAM_SNAPSHOT_EVERY, PARAM_EXPERIMENT, PARAM_RUN_NAME)
DEFAULT_VALUE = "default"  # how a param that is None (PyTorch's init, no run name given) is logged
CNN_SIZES_VALUE = "cnn"  # the CNN's `sizes` param: its shape is fixed, not a list of sizes

# Params beyond the training options, describing the run rather than setting it.
PARAM_ARCH_LABEL = "arch_label"  # e.g. mlp-784-30-10-sigmoid, cnn-relu
PARAM_N_PARAMS = "n_params"
PARAM_DATASET = "dataset"
PARAM_LAYERS = "layers"  # comma-separated layer names, input to output
PARAM_SHA256_PREFIX = "sha256."  # one param per data file: sha256.<file name>
PARAM_N_CONFIGS = "n_configs"  # on a grid's parent run
# A run logged from the user's own loop (training.own_loop): its weight layers as JSON, a list of
# {"name", "kind", "weight_shape", "activation"}, input to output.  The dashboard's layers come from it.
PARAM_LAYER_STRUCTURE = "layer_structure"

# What a person comparing runs should not see as a hyperparameter: names, bookkeeping and
# descriptions (sha256.* too, by its prefix; see is_hyperparameter).
NOT_HYPERPARAMS = (PARAM_EXPERIMENT, PARAM_RUN_NAME, PARAM_DATASET, PARAM_LAYERS, PARAM_SNAPSHOT_EVERY,
                   PARAM_ARCH_LABEL, PARAM_N_PARAMS, PARAM_N_CONFIGS, PARAM_LAYER_STRUCTURE)
# Settings that name a run rather than change what it computes: left out of the config hash.
NAMING_PARAMS = (PARAM_EXPERIMENT, PARAM_RUN_NAME)


def is_hyperparameter(name: str) -> bool:
    return name not in NOT_HYPERPARAMS and not name.startswith(PARAM_SHA256_PREFIX)


# ---- artifacts ----
SNAPSHOT_DIR = "snapshots"
MODEL_NAME = "model"
# A built-in run's logged model, beside MLflow's MLmodel file (training.nets.saved_model writes and reads them):
MODEL_WEIGHTS_FILE = "weights.npz"  # float32 arrays in PyTorch layout, keyed by state_dict name (fc1.weight)
MODEL_CONFIG_FILE = "config.json"  # the run's config as its params, which rebuilds the module
MODEL_REQUIREMENTS_FILE = "requirements.txt"  # the pins it was logged with
MODEL_PYTHON_ENV_FILE = "python_env.yaml"  # MLflow's virtualenv spec: this Python, then the requirements
GRID_FILE_ARTIFACT = "grid.yaml"  # a grid's YAML file, on its parent run
# A run from the user's own loop also logs its hidden units' test-set activations per epoch, since the
# dashboard cannot rerun a model whose code it does not have: float16 (10000, units), one array per layer.
ACTIVATIONS_DIR = "unit_activations"
UNIT_ACTS_PREFIX = "unit_acts"


# A run from the user's own loop also logs, as it ends, its model as data, so that the views which rerun the
# network need neither the user's code nor unpickling (training.own_loop.model_graph writes, training.nets.graph_model
# reads): torch.fx's graph as JSON (allowlisted module types with their settings, allowlisted functions and tensor
# methods) and an .npz (MODEL_WEIGHTS_FILE) with the input's scale and shift (the run's preprocess) and, per snapshot
# epoch, any state outside the weight layers (LayerNorm, BatchNorm); the weight layers' own come from the snapshots.
# The graph is logged last, with the weights' sha256: no graph, no model.
OWN_MODEL_DIR = "own_model"
OWN_MODEL_GRAPH_FILE = "graph.json"
OWN_INPUT_SCALE = "input/scale"
OWN_INPUT_SHIFT = "input/shift"
OWN_STATE_PREFIX = "state"
# Why a run from the user's own loop has no model graph (its model cannot be traced, or uses a module outside the
# allowlist), in one line; the dashboard shows it where a view would rerun the network.
TAG_OWN_MODEL_MISSING = "mnistlab.own_model.missing"


def own_model_path(file: str) -> str:
    return f"{OWN_MODEL_DIR}/{file}"


def own_state_key(epoch: int, name: str) -> str:
    """A state tensor's key in the own model's .npz at one snapshot epoch, e.g. state/0003/ln.weight."""
    return f"{OWN_STATE_PREFIX}/{epoch:04d}/{name}"


def activations_path(epoch: int) -> str:
    return f"{ACTIVATIONS_DIR}/epoch_{epoch:04d}.npz"


def unit_acts_key(layer: str) -> str:
    return f"{UNIT_ACTS_PREFIX}/{layer}"


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
WEIGHT_PREFIX, BIAS_PREFIX = "weight", "bias"
ACT_HIST_PREFIX, ACT_EDGES_PREFIX = "act_hist", "act_edges"


def weight_key(layer: str) -> str:
    return f"{WEIGHT_PREFIX}/{layer}"


def bias_key(layer: str) -> str:
    return f"{BIAS_PREFIX}/{layer}"


def act_hist_key(layer: str) -> str:
    return f"{ACT_HIST_PREFIX}/{layer}"  # counts, one per bin


def act_edges_key(layer: str) -> str:
    return f"{ACT_EDGES_PREFIX}/{layer}"  # bin edges, len(counts) + 1


CONF_EDGES = "conf/edges"
CONF_HIST_CORRECT = "conf/correct"
CONF_HIST_INCORRECT = "conf/incorrect"
PRED_CLASS = "pred/class"  # uint8, one per test image, in test-set order
PRED_CONFIDENCE = "pred/confidence"  # float32 softmax (or sigmoid) score of the predicted class

# ---- tags ----
TAG_FAILURE_REASON = "failure_reason"
TAG_CONFIG_HASH = "grid.config_hash"
TAG_GRID_NAME = "grid.name"
TAG_GRID_PARENT = "grid.parent"  # TRUE on a grid's parent run
TAG_PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own: nests runs in its UI
TAG_RUN_NAME = "mlflow.runName"
# Which code took the optimizer steps: the C kernel (native-avx512, native-avx2, native: its widest vectors)
# or PyTorch (torch: the fallback, and every own-loop run).  The paths round differently, so a run says which.
TAG_STEP_PATH = "mnistlab.step_path"
STEP_PATHS = ("native-avx512", "native-avx2", "native", "torch")
TAG_SOURCE_RUN = "migrate.source_run_id"  # on a run copied by training.migrate_store: the original's id
# On experiments: MLflow 3's UI tells model-training experiments from GenAI ones by this tag.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow's own: the run's description (markdown, shown on its run page) and where it came from.
TAG_NOTE = "mlflow.note.content"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TRUE = "true"  # the value of flag tags such as grid.parent
# ---- searches (training.sweep.search_run): a grid whose configs an Optuna study proposes ----
# The parent run of a search is also a grid parent (TAG_GRID_PARENT, TAG_GRID_NAME) and carries:
TAG_SEARCH_PARENT = "search.parent"  # TRUE on a search's parent run
TAG_SEARCH_BEST_RUN = "search.best_run_id"  # set when the search ends: the best trial's run
PARAM_SEARCH_SAMPLER = "search.sampler"  # tpe | random | cmaes | grid
PARAM_SEARCH_PRUNER = "search.pruner"  # hyperband | successive_halving | median | none
PARAM_SEARCH_METRIC = "search.metric"  # a validation metric (SEARCH_METRICS)
PARAM_SEARCH_TRIALS = "search.trials"
PARAM_SEARCH_SEED = "search.seed"
PARAM_SEARCH_SPACE = "search.space"  # the space, as JSON: {"lr": {"log_uniform": [0.1, 10]}, ...}
# Each trial is a child run carrying:
TAG_SEARCH_TRIAL = "search.trial"  # the Optuna trial number
TAG_SEARCH_STATE = "search.state"  # set when the trial ends, one of SEARCH_STATES
SEARCH_COMPLETE, SEARCH_PRUNED, SEARCH_FAILED = "complete", "pruned", "failed"
SEARCH_STATES = (SEARCH_COMPLETE, SEARCH_PRUNED, SEARCH_FAILED)
TAG_SEARCH_PRUNED_AT = "search.pruned_at"  # the epoch after which the pruner stopped it
# The metrics a search may optimise, and which way: validation only, never the test set.
SEARCH_METRICS = {VAL_ACC: "maximize", VAL_LOSS: "minimize"}
NEURON_TAG_PREFIX = "neuron"


def neuron_tag_prefix(layer: int) -> str:
    """What every name and note tag of one layer's units starts with."""
    return f"{NEURON_TAG_PREFIX}.{layer}."


def neuron_name_tag(layer: int, unit: int) -> str:
    return f"{neuron_tag_prefix(layer)}{unit}.name"


def neuron_note_tag(layer: int, unit: int) -> str:
    return f"{neuron_tag_prefix(layer)}{unit}.note"


def neuron_tag_unit(layer: int, tag: str) -> tuple[int, str] | None:
    """(unit, "name" or "note") for one of the layer's neuron tags, else None: the inverse of the two above."""
    unit, _, field = tag[len(neuron_tag_prefix(layer)):].partition(".")
    if not tag.startswith(neuron_tag_prefix(layer)) or not unit.isdigit():
        return None
    return (int(unit), field) if tag in (neuron_name_tag(layer, int(unit)), neuron_note_tag(layer, int(unit))) else None


# ---- reviews (dashboard.read.reviews): a team's conclusions, each one run of the reviews experiment ----
# Its title is the run's name and its narrative the run's description (TAG_NOTE), so MLflow's UI shows both.
REVIEWS_EXPERIMENT = "reviews"
TAG_REVIEW_DECISION = "review.decision"  # the run or config adopted
TAG_REVIEW_REASONS = "review.reasons"
TAG_REVIEW_AUTHORS = "review.authors"  # a JSON list, in order of first edit
TAG_REVIEW_UPDATED = "review.updated_ms"  # milliseconds since the epoch
REVIEW_TAG_PREFIX = "review."
REVIEW_VIEW_PREFIX = "review.view."  # one tag per embedded view: review.view.<stamp> = a dashboard URL (path + query)
REVIEW_RUN_PREFIX = "review.run."  # one tag per linked run: review.run.<run id> = "true"
# Params, because MLflow never lets a param change: logging version N+1 is a compare-and-set (two saves of version N
# cannot both claim it), and a comment, once logged, can be neither edited nor lost.
REVIEW_VERSION_PREFIX = "review.version."  # review.version.<n> = "<nonce> <author>"
REVIEW_COMMENT_PREFIX = "review.comment."  # review.comment.<stamp> = JSON {"author", "text"}


def review_view_tag(stamp: str) -> str:
    return f"{REVIEW_VIEW_PREFIX}{stamp}"


def review_run_tag(run_id: str) -> str:
    return f"{REVIEW_RUN_PREFIX}{run_id}"


def review_version_param(version: int) -> str:
    return f"{REVIEW_VERSION_PREFIX}{int(version)}"


def review_comment_param(stamp: str) -> str:
    return f"{REVIEW_COMMENT_PREFIX}{stamp}"


def review_key_suffix(key: str, prefix: str) -> str | None:
    """What follows one of the review prefixes above in a tag or param key, else None."""
    return key[len(prefix):] if key.startswith(prefix) and len(key) > len(prefix) else None


# ---- run statuses (MLflow's) ----
STATUS_RUNNING = "RUNNING"
STATUS_FINISHED = "FINISHED"
STATUS_FAILED = "FAILED"
STATUS_KILLED = "KILLED"
TERMINAL_STATUSES = (STATUS_FINISHED, STATUS_FAILED, STATUS_KILLED)

DATASET_NAME = "mnist"

# ---- the grouping tests/test_structure.py reads ----
METRICS = EPOCH_METRICS + (VAL_LOSS, VAL_ACC, BEST_TEST_ACC, BEST_EPOCH)
PARAMS = CONFIG_PARAMS + (PARAM_ARCH_LABEL, PARAM_N_PARAMS, PARAM_DATASET, PARAM_LAYERS, PARAM_N_CONFIGS,
                          PARAM_LAYER_STRUCTURE, PARAM_SEARCH_SAMPLER, PARAM_SEARCH_PRUNER, PARAM_SEARCH_METRIC,
                          PARAM_SEARCH_TRIALS, PARAM_SEARCH_SEED, PARAM_SEARCH_SPACE)
TAGS = (TAG_STEP_PATH, TAG_FAILURE_REASON, TAG_CONFIG_HASH, TAG_GRID_NAME, TAG_GRID_PARENT, TAG_PARENT_RUN_ID, TAG_RUN_NAME,
        TAG_EXPERIMENT_KIND, TAG_NOTE, TAG_SOURCE_NAME, TAG_SOURCE_TYPE, TAG_SOURCE_RUN, TAG_SEARCH_PARENT,
        TAG_SEARCH_BEST_RUN, TAG_SEARCH_TRIAL, TAG_SEARCH_STATE, TAG_SEARCH_PRUNED_AT, TAG_REVIEW_DECISION,
        TAG_REVIEW_REASONS, TAG_REVIEW_AUTHORS, TAG_REVIEW_UPDATED, TAG_OWN_MODEL_MISSING)
ARTIFACTS = (SNAPSHOT_DIR, MODEL_NAME, GRID_FILE_ARTIFACT, ACTIVATIONS_DIR, CONF_EDGES, CONF_HIST_CORRECT, CONF_HIST_INCORRECT,
             PRED_CLASS, PRED_CONFIDENCE, MODEL_WEIGHTS_FILE, MODEL_CONFIG_FILE, MODEL_REQUIREMENTS_FILE,
             MODEL_PYTHON_ENV_FILE, OWN_MODEL_DIR, OWN_MODEL_GRAPH_FILE, OWN_INPUT_SCALE, OWN_INPUT_SHIFT)
STATUSES = (STATUS_RUNNING,) + TERMINAL_STATUSES
EXPERIMENTS = (REVIEWS_EXPERIMENT,)  # experiments the code itself names (a grid names its own)
# Names built from a prefix: an f-string that starts with one of these bypasses the builders above.
PREFIXES = (GRAD_NORM_PREFIX + "/", DEAD_FRACTION_PREFIX + "/", PARAM_SHA256_PREFIX, WEIGHT_PREFIX + "/",
            BIAS_PREFIX + "/", ACT_HIST_PREFIX + "/", ACT_EDGES_PREFIX + "/", NEURON_TAG_PREFIX + ".", UNIT_ACTS_PREFIX + "/",
            UNIT_SUMMARY_PREFIX + ".", REVIEW_TAG_PREFIX, REVIEW_VIEW_PREFIX, REVIEW_RUN_PREFIX, REVIEW_VERSION_PREFIX,
            REVIEW_COMMENT_PREFIX, OWN_STATE_PREFIX + "/")
