"""The dashboard's read side: every query to the MLflow store goes through here.

It never writes, except neuron names and notes (see `set_neuron_label`).
What it caches follows dashboard.read.cache's one rule: a finished run's metric
histories and snapshot list, and any logged snapshot, never change, so they are
kept (in this process and on disk for every gunicorn worker); a running run's
metrics and status are read fresh.

Every run is untrusted input.  `load_snapshot` is the one way any page reads a snapshot: it checks the
file against what the run's params say (training.nets.snapshot_reader: headers before data, shapes from
the layers, a byte budget from the parameter count) and refuses anything else with a StoreError that
names the file and the array; nothing in the store, or in the cache, is ever unpickled.  MLflow keeps
±inf metrics as ±1.8e308; they are read back as ±inf, so the pages see them for what they are.
"""
import re
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common import mnist_idx
from dashboard.read import cache
from training import contract as C
from training.location import tracking_uri
from training.nets.architecture import RunLayers, run_layers
from training.nets.snapshot_reader import SnapshotError, download_and_read, download_checked

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_RUNS = 50_000  # the most one MLflow search may return (SEARCH_MAX_RESULTS_THRESHOLD): asked for in one call
MLFLOW_INF = np.finfo(np.float64).max  # how MLflow's SQL store keeps +inf (and -inf as its negative)


class StoreError(Exception):
    """Something the user asked for is not in the store (or malformed).  Shown on the page as a message."""


_finished_cache = cache.LRU(20_000)  # metric histories and snapshot lists: small, and a 1,000-run page reads one per run
_snapshot_cache = cache.LRU(256)  # snapshot arrays: up to a few MB each, so far fewer


@cache.memoize(maxsize=4)
def _client() -> MlflowClient:
    return MlflowClient(tracking_uri())


def client() -> MlflowClient:
    return _client()


def experiments() -> list[dict]:
    """Active experiments, newest first (the runs page opens the first).  StoreError if the store cannot be read."""
    try:
        exps = client().search_experiments(view_type=ViewType.ACTIVE_ONLY, order_by=["creation_time DESC"])
    except MlflowException as e:  # an unreachable server or an unusable URI: the user's to fix, not a traceback
        raise StoreError(f"Cannot read the MLflow store: {str(e.message).splitlines()[0][:300]}") from None
    # The reviews (dashboard.read.reviews) are documents, not training runs: the runs page never lists them.
    return [{"id": e.experiment_id, "name": e.name} for e in exps if e.name != C.REVIEWS_EXPERIMENT]


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise StoreError(f"'{str(run_id)[:64]}' is not a run id (32 hex characters)")
    return run_id


def get_run(run_id: str):
    """The run, or StoreError if it is unknown, malformed or deleted.

    Read fresh for every request (tags such as neuron names change), but once per request: one callback
    asks for the same run several times (its status decides what may be cached), and each read costs
    the SQL store tens of milliseconds.
    """
    check_run_id(run_id)
    memo = cache.request_memo("runs")
    if memo is not None and run_id in memo:
        return memo[run_id]
    try:
        run = client().get_run(run_id)
    except MlflowException:
        raise StoreError(f"run {run_id} is not in the store") from None
    if run.info.lifecycle_stage == "deleted":
        raise StoreError(f"run {run_id} was deleted")
    if memo is not None:
        memo[run_id] = run
    return run


def is_finished(run) -> bool:
    return run.info.status in C.TERMINAL_STATUSES


SNAPSHOT_FILES = "snapshot-files"  # the kind of cache entry that holds a run's snapshot epochs and file sizes
CHECKED_SNAPSHOT = "checked-snapshot"  # ... and one snapshot's arrays, as load_snapshot checked them


def _shared_key(kind: str, run, *extra) -> str:
    """A finished run's entry in the shared cache; its end time changes if the run is ever reopened."""
    return ":".join(map(str, (kind, run.info.run_id, run.info.end_time, *extra)))


SEARCH_TTL_S = 30.0
_search_cache = cache.LRU(64)  # (experiment ids, filter) -> (time, newest run id, runs)


def search_page(experiment_ids, filter_string, max_results, token=None, order_by=None):
    """One page of MLflow's search (a PagedList: its `.token` asks for the next), newest first unless
    `order_by` says otherwise.  A bad filter or order raises StoreError with MLflow's own message."""
    try:
        return client().search_runs(experiment_ids, filter_string or "", ViewType.ACTIVE_ONLY, max_results=max_results,
                                    order_by=order_by or ["attributes.start_time DESC"], page_token=token)
    except MlflowException as e:
        raise StoreError(f"bad filter: {e.message}") from None


def search_runs(experiment_ids: list[str], filter_string: str = "") -> list:
    """Runs matching MLflow's search syntax, newest first.  A bad filter raises StoreError with MLflow's own message.

    A search over 1,000 runs costs MLflow over a second, and every visitor's page asks for it.  A result of
    finished runs only changes when a new run appears (checked with a one-run search on every call) or a run
    is deleted or renamed (seen within SEARCH_TTL_S), so it is reused; a result with a running run never is.
    """
    key = (tuple(experiment_ids), filter_string or "")
    hit = _search_cache.get(key)
    if hit and time.monotonic() - hit[0] < SEARCH_TTL_S:
        newest = search_page(experiment_ids, filter_string, 1)
        if [r.info.run_id for r in newest] == hit[1]:
            return list(hit[2])
    runs, token = [], None
    while len(runs) < MAX_RUNS:
        page = search_page(experiment_ids, filter_string, MAX_RUNS - len(runs), token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if all(is_finished(r) for r in runs):
        _search_cache.put(key, (time.monotonic(), [r.info.run_id for r in runs[:1]], runs))
    return runs


def runs_frame(runs: list) -> pd.DataFrame:
    """One row per run: identity, status, params (params.*), latest metrics (metrics.*), times."""
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
               "experiment_id": r.info.experiment_id,
               "parent_run_id": r.data.tags.get(C.TAG_PARENT_RUN_ID),
               "is_grid_parent": r.data.tags.get(C.TAG_GRID_PARENT) == C.TRUE,
               "is_search_parent": r.data.tags.get(C.TAG_SEARCH_PARENT) == C.TRUE,
               "search_state": r.data.tags.get(C.TAG_SEARCH_STATE),  # a search's trial, once it ended
               "search_pruned_at": r.data.tags.get(C.TAG_SEARCH_PRUNED_AT),
               "start_time": pd.to_datetime(r.info.start_time, unit="ms") if r.info.start_time else pd.NaT,
               "duration_s": ((r.info.end_time or 0) - r.info.start_time) / 1000
               if r.info.end_time and r.info.start_time else None}
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"metrics.{k}": from_mlflow(v) for k, v in r.data.metrics.items()})
        row["logged_metrics"] = tuple(sorted(r.data.metrics))  # a NaN it logged is not a metric it never logged
        rows.append(row)
    return pd.DataFrame(rows)


def from_mlflow(value):
    """A metric value as logged: MLflow's SQL store keeps ±inf as ±MLFLOW_INF."""
    return value if not isinstance(value, float) or abs(value) < MLFLOW_INF else float(np.sign(value) * np.inf)


def _history_frame(hist) -> pd.DataFrame:
    df = pd.DataFrame({"step": [m.step for m in hist], "value": [from_mlflow(m.value) for m in hist]},
                      columns=["step", "value"]).astype({"step": "int64", "value": "float64"})
    return df.sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)


def get_runs(run_ids: list[str]) -> tuple[list, list[str]]:
    """The runs that exist, in the order asked (duplicates dropped), and one message per id that does not."""
    runs, problems = [], []
    for rid in dict.fromkeys(run_ids):
        try:
            runs.append(get_run(rid))
        except StoreError as e:
            problems.append(str(e))
    return runs, problems


READ_THREADS = 8  # histories read at once: each is its own query (SQL) or request (a server), mostly waiting


def _history_of(mlflow_client: MlflowClient, key: str, run_id: str) -> list:
    return mlflow_client.get_metric_history(run_id, key)


def _read_histories(run_ids: list[str], key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of one metric for many runs, sorted by step, the last value kept per step.

    MLflow's public client reads one run's history per call (get_metric_history); a few run at once, so
    a page of many runs waits on the slowest of a few queries rather than on their sum.
    """
    read = partial(_history_of, client(), key)
    if len(run_ids) > 1:
        with ThreadPoolExecutor(min(READ_THREADS, len(run_ids)), thread_name_prefix="metric-history") as pool:
            hists = list(pool.map(read, run_ids))
    else:
        hists = [read(rid) for rid in run_ids]
    out = {}
    for rid, hist in zip(run_ids, hists):
        df = _history_frame(hist)
        out[rid] = (df["step"].to_numpy(), df["value"].to_numpy())
    return out


def _finished_history(run, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    rid = run.info.run_id
    if (hit := _finished_cache.get(("history", rid, key))) is not None:
        return hit
    if (arrays := cache.get_arrays(_shared_key("history", run, key))) is not None:
        return _finished_cache.put(("history", rid, key), (arrays["step"], arrays["value"]))
    return None


def _keep_finished_history(run, key: str, arrays: tuple[np.ndarray, np.ndarray]) -> None:
    _finished_cache.put(("history", run.info.run_id, key), arrays)
    cache.set_arrays(_shared_key("history", run, key), {"step": arrays[0], "value": arrays[1]})


def metric_histories(runs: list, keys) -> pd.DataFrame:
    """Long frame (run_id, key, step, value) of several metrics for several runs, in one call.

    Takes Run objects (from search_runs or get_runs) so it needs no extra get_run per run; a key a run
    never logged is skipped without a query.  Finished runs' histories are cached as arrays.
    """
    parts: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for key in list(keys):
        todo, finished = [], {}
        for run in runs:
            rid = run.info.run_id
            if key not in run.data.metrics:
                continue
            finished[rid] = run if is_finished(run) else None
            hit = _finished_history(run, key) if finished[rid] else None
            if hit is None:
                todo.append(rid)
            else:
                parts.append((rid, key, *hit))
        for rid, arrays in _read_histories(todo, key).items():
            if finished[rid]:
                _keep_finished_history(finished[rid], key, arrays)
            parts.append((rid, key, *arrays))
    parts = [p for p in parts if len(p[2])]
    if not parts:
        return pd.DataFrame({"run_id": pd.Series(dtype=str), "key": pd.Series(dtype=str),
                             "step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64")})
    lengths = [len(p[2]) for p in parts]
    return pd.DataFrame({"run_id": np.repeat([p[0] for p in parts], lengths),
                         "key": np.repeat([p[1] for p in parts], lengths),
                         "step": np.concatenate([p[2] for p in parts]).astype("int64"),
                         "value": np.concatenate([p[3] for p in parts]).astype("float64")})


def metric_history(run_id: str, key: str) -> pd.DataFrame:
    """(step, value) for one metric, sorted by step; empty if the run never logged it."""
    run = get_run(run_id)
    cache_key = ("metric", run_id, key)
    if not is_finished(run):
        return _history_frame(client().get_metric_history(run_id, key))
    if (hit := _finished_cache.get(cache_key)) is not None:
        return hit
    if (arrays := _finished_history(run, key)) is None:
        df = _history_frame(client().get_metric_history(run_id, key))
        _keep_finished_history(run, key, (df["step"].to_numpy(), df["value"].to_numpy()))
    else:
        df = pd.DataFrame({"step": arrays[0].astype("int64"), "value": arrays[1].astype("float64")})
    return _finished_cache.put(cache_key, df)


def snapshot_epochs(run_id: str) -> list[int]:
    """Epochs that have a snapshot artifact, ascending; [] for runs without snapshots."""
    return sorted(_snapshot_files(get_run(run_id)))


def _snapshot_files(run) -> dict[int, int | None]:
    """epoch -> the snapshot file's size in bytes as the store lists it (None if it does not say)."""
    run_id = run.info.run_id
    cache_key = (SNAPSHOT_FILES, run_id)
    if is_finished(run):
        if (hit := _finished_cache.get(cache_key)) is not None:
            return hit
        if isinstance(hit := cache.get_json(_shared_key(SNAPSHOT_FILES, run)), list):
            return _finished_cache.put(cache_key, {int(e): size for e, size in hit})
    try:
        listed = client().list_artifacts(run_id, C.SNAPSHOT_DIR)
    except Exception:  # no artifact folder, or a store that cannot list it: no snapshots to show
        listed = []
    files = {e: f.file_size for f in listed if (e := C.snapshot_epoch(f.path)) is not None}
    if is_finished(run):
        cache.set_json(_shared_key(SNAPSHOT_FILES, run), sorted(files.items()))
        _finished_cache.put(cache_key, files)
    return files


def layers(run) -> RunLayers:
    """The run's weight layers: with shapes when its params are a config of ours, else names only."""
    return run_layers(run.data.params, where=f"run {run.info.run_id[:8]} params")


def layer_names(run) -> list[str]:
    """The run's weight layers, input to output (empty for a run that logged neither config nor layers)."""
    return list(layers(run).names)


def load_snapshot(run_id: str, epoch: int) -> dict[str, np.ndarray]:
    """One epoch's snapshot arrays, checked against the run's params.  StoreError, in one line naming the
    file and the array, if that epoch has no snapshot or it is not what the run's layers say."""
    run = get_run(run_id)
    files = _snapshot_files(run)
    if epoch not in files:
        raise StoreError(f"run {run_id} has no snapshot for epoch {epoch}")
    cache_key = ("snapshot", run_id, epoch)
    if (hit := _snapshot_cache.get(cache_key)) is not None:
        return hit
    shared_key = _shared_key(CHECKED_SNAPSHOT, run, int(epoch)) if is_finished(run) else None
    if shared_key and (hit := cache.get_arrays(shared_key, large=True)) is not None:
        return _snapshot_cache.put(cache_key, hit)
    path = C.snapshot_path(int(epoch))  # from a validated run id and an integer epoch: no user text reaches it
    try:
        arrays = download_checked(client(), run_id, path, files[epoch], layers(run), run.data.params.get(C.PARAM_N_PARAMS))
    except SnapshotError as e:
        raise StoreError(f"{path} of run {run_id[:8]} cannot be shown: {e}") from None
    if shared_key:
        cache.set_arrays(shared_key, arrays, large=True)
    return _snapshot_cache.put(cache_key, arrays)  # a logged snapshot never changes, even mid-run


def read_arrays(run_id: str, path: str, wanted: dict, max_bytes: int) -> dict[str, np.ndarray]:
    """A run's .npz artifact through the checked reader (snapshot_reader.read_snapshot: headers first, plain
    numbers, the shapes in `wanted`, at most max_bytes).  SnapshotError, in one line, if it cannot be
    downloaded or is not what `wanted` says."""
    return download_and_read(client(), run_id, path, wanted, max_bytes)


def complete_weights(run_id: str, epoch: int, names) -> dict[str, np.ndarray]:
    """The snapshot at `epoch`, if it holds every weight and bias of `names`, all finite; else StoreError
    saying which is missing or how many of its values are NaN or infinite (a diverged run)."""
    snap = load_snapshot(run_id, epoch)
    for key in (k for name in names for k in (C.weight_key(name), C.bias_key(name))):
        if key not in snap:
            raise StoreError(f"{C.snapshot_path(int(epoch))} of run {run_id[:8]} has no {key}")
        if (bad := int(np.size(snap[key]) - np.isfinite(snap[key]).sum())) > 0:
            raise StoreError(f"{C.snapshot_path(int(epoch))} of run {run_id[:8]}: {key} holds {bad:,} NaN or "
                             f"infinite values (the run diverged?), so its network cannot be evaluated")
    return snap


def arch_label(params: dict) -> str | None:
    """The architecture's label (mlp-784-30-10-sigmoid); runs logged before arch_label existed hold it in arch."""
    return params.get(C.PARAM_ARCH_LABEL, params.get(C.PARAM_ARCH))


def test_set() -> tuple[np.ndarray, np.ndarray]:
    """MNIST test images (10000, 28, 28) uint8 and labels, verified, in the order predictions are logged: the
    process's one read-only copy (common.mnist_idx.test_set, torch-free).  StoreError, one line, if the files
    are missing or altered."""
    try:
        return mnist_idx.test_set()
    except mnist_idx.MnistFileError as e:
        raise StoreError(str(e)) from None


def set_neuron_label(run_id: str, layer: int, unit: int, name: str | None = None, note: str | None = None) -> None:
    """The dashboard's only write: a unit's name or note, as tags on the run shown."""
    get_run(run_id)
    if (memo := cache.request_memo("runs")) is not None:
        memo.pop(run_id, None)  # the rest of this request reads the new tags
    if name is not None:
        client().set_tag(run_id, C.neuron_name_tag(layer, unit), name[:200])
    if note is not None:
        client().set_tag(run_id, C.neuron_note_tag(layer, unit), note[:5000])
