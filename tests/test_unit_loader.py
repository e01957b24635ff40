"""A neuron page resolves its run once: neuron_target.resolve reads it, every loader takes the Target.

The rule (STYLE.md, "a page resolves its subject once"): the loaders under the unit, layer, image, map
and similarity pages never look the run up again from its id.  Reading a snapshot by run id through
dashboard.read.store is a read of data, not a lookup of the run, and stays allowed.
"""
import ast
import inspect
from pathlib import Path

import dash
import pytest

from dashboard.read import cache, store

REPO = Path(__file__).resolve().parents[1]
LOADERS = REPO / "dashboard" / "loaders"
# run_data.py is the run page's loader and search_trials.py the search review's, not the neuron pages': each
# reads its own page's runs once.
NEURON_LOADERS = sorted(p for p in LOADERS.glob("*.py") if p.name not in ("__init__.py", "run_data.py",
                                                                          "search_trials.py"))
RUN_LOOKUPS = {"get_run", "get_runs"}  # the store functions that fetch a run's entity (its params, tags, status)
RESOLVER = ("neuron_target.py", "resolve")
# The resolver module's functions that take a run (its id, or the entity resolve fetched) on purpose.
TAKE_A_RUN = {"resolve", "counterpart", "layer_href", "unit_href", "run_config", "hidden_layers", "_network",
              "_own_loop_reason"}
UNIT_PAGE = "/runs/<run_id>/neurons/<layer>/<unit>"


def _functions(path: Path):
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _run_lookups(fn) -> list[str]:
    """The run lookups a function makes itself: store.get_run(...), or get_run(...) imported bare."""
    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in RUN_LOOKUPS:
                found.append(f"{name} (line {node.lineno})")
    return found


def test_only_the_resolver_looks_a_run_up():
    offenders = []
    for path in [*NEURON_LOADERS, REPO / "dashboard" / "pages" / "unit.py"]:
        for fn in _functions(path):
            if (path.name, fn.name) != RESOLVER and (calls := _run_lookups(fn)):
                offenders.append(f"{path.relative_to(REPO)}:{fn.name}: {', '.join(calls)}")
    assert offenders == [], "look the run up in neuron_target.resolve and pass the Target instead:\n" + \
        "\n".join(offenders)
    resolver = next(fn for fn in _functions(LOADERS / RESOLVER[0]) if fn.name == RESOLVER[1])
    assert len(_run_lookups(resolver)) == 1  # the one lookup the rule allows, once


def test_the_loaders_take_the_resolved_target_not_a_run_id():
    offenders = []
    for path in NEURON_LOADERS:
        for fn in _functions(path):
            if path.name == RESOLVER[0] and fn.name in TAKE_A_RUN:
                continue
            args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
            for a in args:
                if "run" in a.arg or a.arg.endswith("_id") or a.arg in ("rid", "id"):
                    offenders.append(f"{path.relative_to(REPO)}:{fn.name}({a.arg})")
    assert offenders == [], "take a neuron_target.Target instead of a run:\n" + "\n".join(offenders)


@pytest.fixture
def unit_layout(trained_store, monkeypatch):
    """The unit page's layout function as the server calls it, over the trained store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    import dashboard.app  # noqa: F401  (registers the pages)
    return next(p["layout"] for p in dash.page_registry.values() if p["path_template"] == UNIT_PAGE)


@pytest.fixture
def lookups(monkeypatch):
    """Every call of the real store.get_run, by the module that made it (store's own data reads included)."""
    real, callers = store.get_run, []

    def counted(run_id):
        callers.append(inspect.currentframe().f_back.f_globals["__name__"])
        return real(run_id)
    monkeypatch.setattr(store, "get_run", counted)
    return callers


def _ids(component) -> set:
    found, todo = set(), [component]
    while todo:
        c = todo.pop()
        if isinstance(c, (list, tuple)):
            todo.extend(c)
        elif hasattr(c, "to_plotly_json"):
            found.add(getattr(c, "id", None))
            todo.append(getattr(c, "children", None))
    return found


@pytest.mark.parametrize("cold", [True, False])
def test_rendering_a_unit_page_looks_its_run_up_once(trained_store, unit_layout, lookups, cold):
    rid = trained_store.run_ids["relu"]
    if cold:
        cache.clear()  # every loader runs, none answers from its cache
    else:
        unit_layout(run_id=rid, layer="2", unit="3")
    lookups.clear()
    page = unit_layout(run_id=rid, layer="2", unit="3")
    assert {"unit-summary", "unit-top", "unit-emergence-line", "unit-fv"} <= _ids(page)  # the page, not a message
    outside_store = [c for c in lookups if c != store.__name__]
    assert outside_store == ["dashboard.loaders.neuron_target"], lookups
    if cold:
        assert store.__name__ in lookups  # the wrapper sees store's own snapshot reads: it would see a loader's


def test_a_unit_page_comparing_two_runs_looks_each_up_once(trained_store, unit_layout, lookups):
    rid, other = trained_store.run_ids["sigmoid"], trained_store.run_ids["sigmoid_b"]
    cache.clear()
    page = unit_layout(run_id=rid, layer="1", unit="3", compare=other)
    assert "unit-compare-corr" in _ids(page)
    assert [c for c in lookups if c != store.__name__] == ["dashboard.loaders.neuron_target"] * 2, lookups
