"""Every run is untrusted input: a real run's snapshot, metrics and params, mutated by hypothesis, never make a
page raise.  For each mutation every page's layout and every callback of the page modules (called in-process,
as Dash would, with the mutated run's id) returns components, figures or a message; a snapshot the store
refuses is refused in one line that names the file, and that line is what the pages show."""
import io
import zipfile
from dataclasses import dataclass

import dash
import numpy as np
import numpy.lib.format as npy
import pytest
from dash import _callback
from dash._callback_context import context_value
from dash._utils import AttributeDict
from dash.development.base_component import Component
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from tests.conftest import sqlite_uri
from training import contract as C

EXPERIMENT = "untrusted"
KEYS = (C.weight_key("fc1"), C.bias_key("fc1"), C.weight_key("fc2"), C.act_hist_key("fc1"), C.act_edges_key("fc2"),
        C.CONF_EDGES, C.CONF_HIST_CORRECT, C.PRED_CLASS, C.PRED_CONFIDENCE)
SNAPSHOT_KINDS = ("keep", "shape", "dtype", "missing", "extra", "truncate", "huge", "bomb", "nonfinite", "pred_range",
                  "not_npz")
DTYPES = ("object", "complex64", "<U5", "structured", "longdouble", "float16", "int8", ">f4", "bool")
METRIC_KINDS = ("keep", "nonfinite", "drop_some", "none")
PARAM_KINDS = ("keep", "lr_abc", "wrong_sizes", "cnn", "foreign", "none", "bad_layers")
ALWAYS_REFUSED = ("truncate", "not_npz", "pred_range")  # whatever the params say
REFUSED_WITH_SHAPES = ("shape", "huge", "bomb")  # when the params give every array's shape


@dataclass(frozen=True)
class Mutation:
    snapshot: str
    key: str
    epoch: int | None  # the snapshot epoch mutated; None: every one
    metrics: str
    params: str
    seed: int


# ---- the real run, and a store of mutated copies -------------------------------------------------------

def read_source(trained_store, folder):
    """The trained store's sigmoid [784,20,10] run: its params, metric histories and raw snapshot files."""
    source = MlflowClient(trained_store.tracking_uri)
    rid = trained_store.run_ids["sigmoid"]
    run = source.get_run(rid)
    snapshots = {}
    for f in source.list_artifacts(rid, C.SNAPSHOT_DIR):
        local = source.download_artifacts(rid, f.path, str(folder))
        with open(local, "rb") as fh:
            snapshots[C.snapshot_epoch(f.path)] = fh.read()
    histories = {k: [m.value for m in sorted(source.get_metric_history(rid, k), key=lambda m: m.step)]
                 for k in run.data.metrics}
    return dict(run.data.params), histories, snapshots


def private_store(root, source) -> "Base":
    """An empty store at root (tracking must point at it) with an unmutated copy of the source run."""
    client = MlflowClient(sqlite_uri(root))
    exp = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    base = Base(client, exp, *source, root)
    base.clean = base.log("clean copy", base.params, base.histories, base.snapshots)
    return base


@pytest.fixture(scope="module")
def world(trained_store, tmp_path_factory):
    """A private store with a copy of a real run; tracking points at it meanwhile (the trained store is never written)."""
    source = read_source(trained_store, tmp_path_factory.mktemp("untrusted-source"))
    root = tmp_path_factory.mktemp("untrusted-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", sqlite_uri(root))
        from dashboard.loaders import run_data
        # The landscape's code path, on a coarser grid: the fuzz is about inputs, not resolution.
        env.setattr(run_data, "LANDSCAPE_RESOLUTION", {"mlp": 3, "cnn": 3})
        env.setattr(run_data, "LANDSCAPE_IMAGES", {"mlp": 200, "cnn": 50})
        base = private_store(root, source)
        import dashboard.app  # noqa: F401  (registers the pages and their callbacks)
        yield base


class Base:
    """A private store's client and experiment, and the source run's data to log mutated copies of."""

    def __init__(self, client, exp, params, histories, snapshots, root):
        self.client, self.exp, self.params, self.histories, self.snapshots, self.root = \
            client, exp, params, histories, snapshots, root
        self.clean = None

    def log(self, name, params, histories, snapshots) -> str:
        rid = self.client.create_run(self.exp, run_name=name).info.run_id
        metrics = [Metric(k, float(v), 1_700_000_000_000 + step, step) for k, values in histories.items()
                   for step, v in enumerate(values)]
        self.client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
        folder = self.root / rid
        folder.mkdir()
        for epoch, data in snapshots.items():
            path = folder / C.snapshot_path(epoch).rsplit("/", 1)[1]
            path.write_bytes(data)
            self.client.log_artifact(rid, str(path), C.SNAPSHOT_DIR)
        self.client.set_terminated(rid, C.STATUS_FINISHED)
        return rid


# ---- mutations -------------------------------------------------------------------------------------------

def _npy(array, declared_shape=None) -> bytes:
    buf = io.BytesIO()
    if declared_shape is None:
        npy.write_array(buf, array, allow_pickle=True)
    else:  # a header that lies: what no numpy writer produces, and a hostile or broken one can
        npy.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": declared_shape})
        buf.write(b"\0" * 64)
    return buf.getvalue()


def _npz(members: dict[str, bytes], deflated: frozenset = frozenset()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for key, data in members.items():
            z.writestr(f"{key}.npy", data, zipfile.ZIP_DEFLATED if key in deflated else zipfile.ZIP_STORED)
    return buf.getvalue()


def _with_dtype(a: np.ndarray, name: str) -> np.ndarray:
    if name == "object":
        return np.array([object()] * a.size, dtype=object).reshape(a.shape)
    if name == "structured":
        return np.zeros(a.shape, dtype=[("x", "<f4"), ("y", "<i4")])
    return a.astype(np.dtype(name))


def mutate_snapshot(raw: bytes, kind: str, key: str, rng) -> bytes:
    if kind == "truncate":
        return raw[:int(len(raw) * rng.uniform(0.05, 0.95))]
    if kind == "not_npz":
        return rng.bytes(int(rng.integers(0, 300)))
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    members, deflated = {k: _npy(a) for k, a in arrays.items()}, frozenset()
    a = arrays[key]
    if kind == "shape":
        members[key] = _npy(np.concatenate([a, a[:1]]) if rng.random() < 0.5 else a.reshape(-1)[:-1])
    elif kind == "dtype":
        members[key] = _npy(_with_dtype(a, DTYPES[int(rng.integers(len(DTYPES)))]))
    elif kind == "missing":
        del members[key]
    elif kind == "extra":
        members["extra/pickled"] = _npy(np.array([object()], dtype=object))  # never read: nobody asks for it
        members["extra/huge"] = _npy(None, declared_shape=(25_000_000_000,))
    elif kind == "huge":
        members[key] = _npy(None, declared_shape=(25_000_000_000,))  # 100 GB of float32
    elif kind == "bomb":
        members[key], deflated = _npy(np.zeros(4_000_000, np.float32)), frozenset([key])  # 16 MB, 16 kB zipped
    elif kind == "nonfinite":
        b = a.astype(np.float64).ravel()
        picks = rng.integers(0, b.size, size=max(1, b.size // 10))
        b[picks] = rng.choice([np.nan, np.inf, -np.inf], size=len(picks))
        members[key] = _npy(b.reshape(a.shape).astype(np.float32 if a.dtype == np.float32 else np.float64))
    elif kind == "pred_range":
        pred = arrays[C.PRED_CLASS].copy()
        pred[int(rng.integers(pred.size))] = int(rng.integers(10, 256))
        members[C.PRED_CLASS] = _npy(pred)
    return _npz(members, deflated)


def mutate_histories(histories: dict, kind: str, rng) -> dict:
    if kind == "none":
        return {}
    out = {k: list(v) for k, v in histories.items()}
    if kind == "drop_some":
        return {k: v for k, v in out.items() if rng.random() < 0.5}
    if kind == "nonfinite":
        for k in out:
            for i in range(len(out[k])):
                if rng.random() < 0.3:
                    out[k][i] = float(rng.choice([np.nan, np.inf, -np.inf]))
    return out


def mutate_params(params: dict, kind: str) -> dict:
    p = dict(params)
    if kind == "lr_abc":
        p[C.PARAM_LR] = "abc"
    elif kind == "wrong_sizes":
        p[C.PARAM_SIZES] = "784,30,10"
    elif kind == "cnn":
        p[C.PARAM_ARCH] = "cnn"
    elif kind == "foreign":  # another tool: layer names and a parameter count, no config
        p = {C.PARAM_LAYERS: p[C.PARAM_LAYERS], C.PARAM_N_PARAMS: p[C.PARAM_N_PARAMS]}
    elif kind == "none":
        p = {}
    elif kind == "bad_layers":
        p[C.PARAM_ACTIVATION] = "swish"
        p[C.PARAM_LAYERS] = "fc1,../../etc,fc1,"
    return p


def must_refuse(m: Mutation, epoch: int) -> bool:
    if m.params == "wrong_sizes":
        return True
    if m.epoch is not None and m.epoch != epoch:
        return False
    return m.snapshot in ALWAYS_REFUSED or (m.params == "keep" and m.snapshot in REFUSED_WITH_SHAPES)


# ---- the pages, as Dash calls them -----------------------------------------------------------------------

def page_callbacks() -> list:
    """Every Python callback registered by a page module: (function, inputs, states)."""
    from dashboard import app
    found = {}
    for spec in {**_callback.GLOBAL_CALLBACK_MAP, **app.app.callback_map}.values():
        fn = getattr(spec.get("callback"), "__wrapped__", None)
        if fn is not None and ".pages." in f".{fn.__module__}":
            found[(fn.__module__, fn.__name__)] = (fn, [(i["id"], i["property"]) for i in spec["inputs"]],
                                                   [(s["id"], s["property"]) for s in spec["state"]])
    return list(found.values())


def callback_values(rid: str, other: str, exp: str, epochs: list[int]) -> dict:
    """What the browser would send for each input and state, for this run."""
    last = epochs[-1] if epochs else None
    return {
        ("run-id", "data"): rid, ("run-epoch", "value"): last, ("run-url", "search"): f"?epoch={last}",
        ("run-landscape-button", "n_clicks"): 1,
        ("neurons-epoch", "value"): last, ("neurons-sort", "value"): "si",
        ("neurons-target", "data"): {"run_id": rid, "layer": 1},
        ("unit-epoch", "value"): last, ("unit-target", "data"): {"run_id": rid, "layer": 1, "unit": 0,
                                                                  "snapshot_epochs": epochs},
        ("unit-show-bottom", "value"): ["on"], ("unit-play", "n_clicks"): 1, ("unit-timer", "n_intervals"): 1,
        ("unit-timer", "disabled"): True, ("unit-save", "n_clicks"): 1, ("unit-name", "value"): "loop",
        ("unit-note", "value"): "a note", ("unit-compare-run", "value"): other,
        ("unit-report-button", "n_clicks"): 1,
        ("compare-smooth", "value"): 0.5, ("compare-all-params", "value"): ["all"],
        ("_pages_location", "search"): f"?runs={rid},{other}",
        ("runs-experiment", "value"): exp, ("runs-filter", "value"): "", ("runs-grid", "selectedRows"): [{"run_id": rid}],
        ("runs-heat-x", "value"): C.PARAM_LR, ("runs-heat-y", "value"): C.PARAM_SEED,
        ("runs-heat-metric", "value"): "final_test_acc", ("runs-live", "n_intervals"): 1,
        ("compare-group", "value"): "on", ("compare-band", "value"): "sd", ("compare-epoch", "value"): last,
        ("neurons-show", "value"): "fv", ("xneurons-layer", "value"): 1, ("xneurons-epoch", "value"): last,
        ("image-target", "data"): {"run_id": rid, "epoch": last, "index": 8}, ("image-epoch", "value"): last,
        ("map-target", "data"): {"run_id": rid, "layer": 1, "epoch": last, "method": "pca"},
        ("map-graph", "hoverData"): {"points": [{"customdata": 8, "pointIndex": 8}]},
        ("map-graph", "clickData"): {"points": [{"customdata": 8, "pointIndex": 8}]}, ("map-epoch", "value"): last,
        ("ablation-sort", "value"): "index", ("ablation-epoch", "value"): last,
        ("ablation-target", "data"): {"run_id": rid, "layer": 1, "epoch": last, "mode": "mean"},
        ("circuit-epoch", "value"): last, ("circuit-target", "data"): {"view": "circuit", "run_id": rid, "layer": 1,
                                                                       "unit": 0, "epoch": None},
    }


def call(fn, inputs, states, values):
    """The callback with the values Dash would pass, its first input as the trigger, inside a request as in Dash."""
    from dashboard import app
    context_value.set(AttributeDict(triggered_inputs=[{"prop_id": f"{inputs[0][0]}.{inputs[0][1]}", "value": 1}]))
    with app.server.test_request_context("/_dash-update-component", method="POST"):
        return fn(*[values.get(k) for k in inputs + states])


def layouts(rid: str, other: str, exp: str) -> dict:
    args = {"/runs/<run_id>": {"run_id": rid}, "/runs/<run_id>/neurons": {"run_id": rid, "layer": "1"},
            "/runs/<run_id>/neurons/<layer>/<unit>": {"run_id": rid, "layer": "1", "unit": "0", "compare": other},
            "/compare": {"runs": f"{rid},{other}"}, "/": {"experiment": exp},
            "/compare/neurons": {"runs": f"{rid},{other}", "layer": "1"},
            "/similarity": {"runs": f"{rid},{other}", "layer": "1", "run": rid},
            "/runs/<run_id>/neurons/map": {"run_id": rid, "layer": "1"},
            "/runs/<run_id>/images/<index>": {"run_id": rid, "index": "8"},
            "/runs/<run_id>/neurons/circuit": {"run_id": rid, "layer": "1", "unit": "0"},
            "/runs/<run_id>/neurons/digits": {"run_id": rid, "digit": "0"},
            "/runs/<run_id>/neurons/ablation": {"run_id": rid, "layer": "1"},
            "/search/<run_id>": {"run_id": rid},  # a mutated run is no search: the page must say so
            "/reviews": {}, "/reviews/<review_id>": {"review_id": rid}}  # ... nor a review
    from dashboard import app
    out = {}
    for p in dash.page_registry.values():
        template = p["path_template"] or p["path"]
        with app.server.test_request_context(template):
            out[template] = p["layout"](**args[template])  # a new page needs its arguments here
    return out


def text(node) -> str:
    """All the text a component tree shows."""
    if isinstance(node, (list, tuple)):
        return " ".join(text(n) for n in node)
    if isinstance(node, Component):
        return text(getattr(node, "children", None))
    return node if isinstance(node, str) else ""


# ---- the property ------------------------------------------------------------------------------------

mutations = st.builds(Mutation, snapshot=st.sampled_from(SNAPSHOT_KINDS), key=st.sampled_from(KEYS),
                      epoch=st.sampled_from([0, 1, 2, None]), metrics=st.sampled_from(METRIC_KINDS),
                      params=st.sampled_from(PARAM_KINDS), seed=st.integers(0, 2 ** 16))
EXAMPLES = [Mutation("shape", C.weight_key("fc1"), None, "keep", "keep", 0),
            Mutation("huge", C.weight_key("fc2"), 2, "nonfinite", "foreign", 1),
            Mutation("bomb", C.bias_key("fc1"), None, "keep", "foreign", 2),
            Mutation("dtype", C.weight_key("fc1"), 2, "drop_some", "keep", 3),
            Mutation("nonfinite", C.weight_key("fc1"), 2, "nonfinite", "keep", 4),
            Mutation("truncate", C.PRED_CLASS, 0, "none", "lr_abc", 5),
            Mutation("pred_range", C.PRED_CLASS, 2, "keep", "cnn", 6),
            Mutation("missing", C.weight_key("fc2"), None, "keep", "none", 7),
            Mutation("extra", C.weight_key("fc1"), None, "nonfinite", "bad_layers", 8),
            Mutation("not_npz", C.weight_key("fc1"), 1, "keep", "wrong_sizes", 9),
            Mutation("nonfinite", C.act_hist_key("fc1"), None, "nonfinite", "keep", 10)]


def with_examples(test):
    """Each snapshot category at least once, whatever hypothesis draws."""
    for m in reversed(EXAMPLES):
        test = example(m=m)(test)
    return test


def log_mutated(world, m: Mutation) -> str:
    rng = np.random.default_rng(m.seed)
    snapshots = {e: mutate_snapshot(raw, m.snapshot, m.key, rng) if m.epoch in (None, e) else raw
                 for e, raw in world.snapshots.items()}
    return world.log(f"mutated {m}", mutate_params(world.params, m.params),
                     mutate_histories(world.histories, m.metrics, rng), snapshots)


def refusals_of(rid: str, m: Mutation) -> dict[int, str]:
    """epoch -> the store's one-line refusal, for each snapshot it refuses; checks what must be refused is."""
    from dashboard.read import store
    refusals = {}
    for epoch in store.snapshot_epochs(rid):
        try:
            store.load_snapshot(rid, epoch)
        except store.StoreError as e:
            refusals[epoch] = str(e)
            assert C.snapshot_path(epoch) in str(e) and "\n" not in str(e), str(e)
        assert not must_refuse(m, epoch) or epoch in refusals, f"epoch {epoch} was not refused"
    return refusals


FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=40, **FUZZ)
@given(m=mutations)
@with_examples
def test_the_store_refuses_a_mutated_snapshot_in_one_line_naming_the_file_or_loads_it_checked(world, m):
    from dashboard.read import store
    rid = log_mutated(world, m)
    refusals = refusals_of(rid, m)
    shapes = store.layers(store.get_run(rid)).layers
    for epoch in set(store.snapshot_epochs(rid)) - set(refusals):
        snap = store.load_snapshot(rid, epoch)
        for key, array in snap.items():  # what the pages compute with: plain numbers, the shapes the params say
            assert array.dtype.kind in "fu" and array.dtype.isnative, (key, array.dtype)
        if shapes is not None:
            for layer in shapes:
                if C.weight_key(layer.name) in snap:
                    assert snap[C.weight_key(layer.name)].shape == layer.weight_shape


@pytest.mark.slow
@settings(max_examples=12, **FUZZ)
@given(m=mutations)
@with_examples
def test_every_page_and_callback_answers_a_mutated_run_with_a_message_or_a_figure(world, m):
    from dashboard.read import store
    rid = log_mutated(world, m)
    refusals = refusals_of(rid, m)

    pages = layouts(rid, world.clean, world.exp)
    for template, shown in pages.items():
        assert isinstance(shown, Component), (template, shown)
    values = callback_values(rid, world.clean, world.exp, store.snapshot_epochs(rid))
    callbacks = page_callbacks()
    assert len(callbacks) >= 15  # the scan sees the pages' callbacks
    outputs = {fn.__name__: call(fn, inputs, states, values) for fn, inputs, states in callbacks}

    if refusals:  # the weights section reads every snapshot: it shows the first refusal, as a message
        assert refusals[min(refusals)] in text(outputs["show_weights"])
    last = max(world.snapshots)
    if last in refusals and m.params in ("keep", "wrong_sizes"):
        assert refusals[last] in text(pages["/runs/<run_id>/neurons"])
