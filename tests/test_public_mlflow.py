"""MLflow only through its public API: no module of training/, dashboard/ or common/ imports MLflow's internals
(mlflow.store, mlflow.server, mlflow.utils, or any `_private` module or name) or reaches for an underscore-named
attribute of an object that may be MLflow's.

The attribute rule, by AST: `x._name`, and getattr/hasattr/setattr/delattr(x, "_name"), are allowed only where x is
provably not MLflow's: `self` or `cls` itself (our own object's own attribute), one of our modules or classes
(resolved in our source), or a name imported from another library (torch, cachelib...: not this test's subject).
Anything else (a local, a parameter, a call's result, `self.client`, the `mlflow` module) may hold an MLflow object,
so it is an offence.  A true exception that is not MLflow's is named in NOT_MLFLOW, with why.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "dashboard", "common")
INTERNAL = ("mlflow.store", "mlflow.server", "mlflow.utils")
ACCESSORS = ("getattr", "hasattr", "setattr", "delattr")
# (file, expression): private attributes of objects that are not MLflow's, reached from a local variable.
NOT_MLFLOW: set[tuple[str, str]] = set()  # none today: add (file, expression) with a reason


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _our_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def _ours(module: str, name: str) -> bool:
    """`from module import name` binds one of our modules or classes (not a function: it may return MLflow's)."""
    if _our_file(f"{module}.{name}"):
        return True
    path = _our_file(module)
    return path is not None and any(isinstance(n, ast.ClassDef) and n.name == name
                                    for n in ast.parse(path.read_text()).body)


def _internal(module: str) -> bool:
    return module.startswith(tuple(f"{m}." for m in INTERNAL) + INTERNAL) or any(map(_private, module.split(".")))


def _imports(tree: ast.Module, where) -> tuple[set[str], list]:
    """Names provably not MLflow's (our modules and classes, other libraries), and the import offences."""
    safe = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "mlflow":
                    bad += [where(node, f"import {a.name}")] if _internal(a.name) else []
                elif a.name.split(".")[0] not in PACKAGES or a.asname is None or _our_file(a.name):
                    safe.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] == "mlflow":
                names = [a.name for a in node.names]
                if _internal(module) or any(map(_private, names)):
                    bad.append(where(node, f"from {module} import {', '.join(names)}"))
            elif node.level == 0 and module.split(".")[0] not in PACKAGES:
                safe.update(a.asname or a.name for a in node.names)
            elif node.level == 0:
                safe.update(a.asname or a.name for a in node.names if _ours(module, a.name))
    return safe, bad


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _not_mlflow(base: ast.expr, safe: set[str]) -> bool:
    if isinstance(base, ast.Name) and base.id in ("self", "cls"):
        return True  # only self itself: self.client._x is the client's private, not ours
    root = _root(base)
    return isinstance(root, ast.Name) and root.id in safe and root.id not in ("self", "cls")


def offences(path: Path) -> list[str]:
    """Every place in one file that reaches MLflow other than through its public API, as 'file:line: code'."""
    rel = path.relative_to(REPO).as_posix()
    tree = ast.parse(path.read_text())

    def where(node, text):
        return node.lineno, node.col_offset, f"{rel}:{node.lineno}: {text}"

    safe, out = _imports(tree, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base, text = node.value, ast.unparse(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ACCESSORS \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str) and _private(node.args[1].value):
            base, text = node.args[0], ast.unparse(node)
        elif isinstance(node, ast.Attribute) and ast.unparse(node) in INTERNAL:
            base, text = None, ast.unparse(node)  # `import mlflow` then mlflow.utils....
        else:
            continue
        if (base is None or not _not_mlflow(base, safe)) and (rel, text) not in NOT_MLFLOW:
            out.append(where(node, text))
    return [text for *_, text in sorted(out)]


def our_modules() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]


PLANTED = '''\
import torch
import mlflow
import mlflow.store.tracking.sqlalchemy_store
from mlflow.utils.validation import check
from mlflow.server import app
from mlflow.tracking import MlflowClient, _get_store
from mlflow.tracking._tracking_service.utils import get
from mlflow.data.meta_dataset import MetaDataset
from training import contract as C
from training.tracking.mlflow_sink import MlflowSink, client


class Ours:
    def __init__(self, c: MlflowClient):
        self._x = 1
        self.client = c
        store = self.client._tracking_client.store
        hasattr(self, "_x")


def f(c):
    store = c._tracking_client.store
    ds = MetaDataset(None)._to_mlflow_entity()
    write = getattr(repo, "_write_to_destination_path", None)
    mlflow.tracking._tracking_service
    client()._tracking_client
    mlflow.utils.time
    torch._foreach_add_(a, b)
    Ours()._x
    MlflowSink._tmp
    C._private_name
'''


def test_the_scan_catches_each_kind_of_offence_and_passes_our_own_privates():
    planted = REPO / "tests" / "_public_mlflow_example.py"
    planted.write_text(PLANTED)
    try:
        found = [f.split(": ", 1)[1] for f in offences(planted)]
    finally:
        planted.unlink()
    assert found == [
        "import mlflow.store.tracking.sqlalchemy_store",
        "from mlflow.utils.validation import check",
        "from mlflow.server import app",
        "from mlflow.tracking import MlflowClient, _get_store",
        "from mlflow.tracking._tracking_service.utils import get",
        "self.client._tracking_client",
        "c._tracking_client",
        "MetaDataset(None)._to_mlflow_entity",
        "getattr(repo, '_write_to_destination_path', None)",
        "mlflow.tracking._tracking_service",
        "client()._tracking_client",
        "mlflow.utils",
    ], found


def test_training_dashboard_and_common_use_only_mlflows_public_api():
    found = [o for path in our_modules() for o in offences(path)]
    assert found == [], "\n".join(found)


def test_log_batch_keeps_each_call_within_mlflows_documented_limits_and_loses_nothing():
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from training.location import tracking_uri
    from training.tracking.mlflow_sink import log_batch

    class Counting(MlflowClient):  # the real client, each call's size noted
        sizes: list = []

        def log_batch(self, run_id, metrics=(), params=(), tags=(), **kw):
            self.sizes.append((len(metrics), len(params), len(tags)))
            return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)

    c = Counting(tracking_uri())
    rid = c.create_run(c.create_experiment("limits")).info.run_id
    log_batch(c, rid, metrics=[Metric(f"m{i % 7}", float(i), 1000, i) for i in range(2500)],
              params=[Param(f"p{i}", str(i)) for i in range(250)], tags=[RunTag(f"t{i}", str(i)) for i in range(150)])
    assert all(m <= 1000 and p <= 100 and t <= 100 and m + p + t <= 1000 for m, p, t in c.sizes), c.sizes
    run = c.get_run(rid)
    assert len(run.data.params) == 250 and all(f"t{i}" in run.data.tags for i in range(150))
    assert sum(len(c.get_metric_history(rid, f"m{k}")) for k in range(7)) == 2500
