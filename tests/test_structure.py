"""The code's shape, enforced: the packages' one direction (training -> common <- dashboard, and the dashboard
reads training), no import cycles, no logged name spelled outside the contract, small modules and functions,
folders small enough to find a module in, and a store and a common package that start without torch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from training import contract as C

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "dashboard", "common")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
MAX_LOOSE_MODULES = 12  # a folder with more is a drawing with too many boxes: group them by layer


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_targets(name: str, tree: ast.AST, is_package: bool) -> set[str]:
    """Every dotted name a module imports, at the top or inside a function (a lazy import is still a dependency),
    relative imports resolved, and `importlib.import_module("...")` / `__import__("...")` with a literal name."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}".lstrip(".") for a in node.names}
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
            found.add(node.args[0].value)
    return {t for t in found if t}


def imported(name: str, tree: ast.AST, known: set[str], is_package: bool = False) -> set[str]:
    """Our modules that a module imports (see import_targets)."""
    return {t for t in import_targets(name, tree, is_package) if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, ast.parse(path.read_text()), set(mods), path.name == "__init__.py")
            for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None.  Package __init__s that only
    hold a docstring are leaves, so `from training import contract` counts as importing training.contract."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_the_modules_of_the_packages():
    graph = import_graph()
    assert len(graph) > 30  # the scan sees the packages
    assert "training.contract" in graph["training.engine.loop"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# The direction between the packages: training -> common <- dashboard, and dashboard -> training (the models,
# config and contract it reads).  Never training -> dashboard, and common stands on numpy alone.
FORBIDDEN = {"training": {"dashboard"}, "common": {"training", "dashboard", "torch", "dash"}}


def direction_offences(name: str, tree: ast.AST, is_package: bool = False) -> list[str]:
    """The imports of one module that go against the packages' direction."""
    banned = FORBIDDEN.get(name.split(".")[0], set())
    return sorted(f"{name} imports {t}" for t in import_targets(name, tree, is_package)
                  if t.split(".")[0] in banned or t.split(".")[0].startswith("dash_") and "dash" in banned)


def test_the_direction_scan_finds_a_lazy_a_relative_and_a_dynamic_import_the_other_way():
    planted = ast.parse("import numpy\nfrom training import contract\n"
                        "def f():\n    from dashboard.read import store\n"
                        "def g():\n    import importlib\n    return importlib.import_module('dashboard.app')\n")
    assert direction_offences("training.tracking.x", planted) == [
        "training.tracking.x imports dashboard.app", "training.tracking.x imports dashboard.read",
        "training.tracking.x imports dashboard.read.store"]
    assert direction_offences("common.x", ast.parse("from . import neurons\nimport torch.nn\nimport dash_ag_grid\n")) == [
        "common.x imports dash_ag_grid", "common.x imports torch.nn"]
    assert direction_offences("common.x", ast.parse("from .. import training\n")) == ["common.x imports training"]
    assert direction_offences("dashboard.x", planted) == []  # the dashboard may read training


def test_training_never_imports_the_dashboard_and_common_imports_neither_nor_torch_nor_dash():
    mods = modules()
    assert {"training.backfill_summaries", "common.neurons", "common.mnist_idx"} <= set(mods)  # the scan sees them
    offences = [o for name, path in mods.items()
                for o in direction_offences(name, ast.parse(path.read_text()), path.name == "__init__.py")]
    assert offences == [], "\n".join(offences)


def test_common_imports_without_torch_or_dash():
    names = sorted(n for n in modules() if n.split(".")[0] == "common")
    code = (f"import sys, {', '.join(names)}; "
            "assert not {'torch', 'dash', 'training', 'dashboard'} & set(sys.modules), "
            "sorted({'torch', 'dash', 'training', 'dashboard'} & set(sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def crowded_folders(root: Path, top: str) -> list[str]:
    """Folders under root/top that hold more than MAX_LOOSE_MODULES modules (besides __init__) at their top."""
    out = []
    for folder in sorted({p.parent for p in (root / top).rglob("*.py")} | {root / top}):
        loose = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        if len(loose) > MAX_LOOSE_MODULES:
            out.append(f"{folder.relative_to(root)}: {len(loose)} modules")
    return out


def test_the_folder_count_flags_a_crowded_folder(tmp_path):
    for i in range(MAX_LOOSE_MODULES):
        (tmp_path / "pkg" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / "sub" / f"m{i}.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    assert crowded_folders(tmp_path, "pkg") == []
    (tmp_path / "pkg" / "sub" / "one_more.py").write_text("")
    assert crowded_folders(tmp_path, "pkg") == [f"pkg/sub: {MAX_LOOSE_MODULES + 1} modules"]


def test_no_package_or_folder_has_more_than_12_modules_loose_at_its_top():
    crowded = [c for package in PACKAGES for c in crowded_folders(REPO, package)]
    assert crowded == [], "\n".join(crowded)


def contract_names() -> set[str]:
    return set(C.METRICS) | set(C.PARAMS) | set(C.TAGS) | set(C.ARTIFACTS) | set(C.STATUSES) | set(C.EXPERIMENTS)


def test_every_name_in_the_contract_is_grouped_for_this_scan():
    """A new name added to contract.py but to no group would escape the literal scan below."""
    tree = ast.parse((REPO / "training" / "contract.py").read_text())
    values = {"mnist", "custom_model_development", "true", "default", "cnn"}  # values, not names
    prefixes = {p.rstrip("./") for p in C.PREFIXES}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            s = node.value.value
            assert s in contract_names() or s in values or s in prefixes or s in C.PREFIXES, s


def test_the_config_dataclass_logs_exactly_the_contracts_config_params():
    from dataclasses import fields

    from training.config import RunConfig
    assert tuple(f.name for f in fields(RunConfig)) == C.CONFIG_PARAMS


def literal_offences(path: Path, names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """Places in one file where a contract name is a string literal, or an f-string starts with a contract prefix."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    in_fstring = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and id(node) not in in_fstring and (node.value in names or node.value.startswith(prefixes)):
            out.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                and str(node.values[0].value).startswith(prefixes):
            out.append(f"{path.relative_to(REPO)}:{node.lineno}: f-string {node.values[0].value!r}…")
    return out


def test_the_literal_scan_catches_a_name_a_prefix_and_an_fstring(tmp_path):
    bad = REPO / "tests" / "_scan_example.py"
    bad.write_text('"""test_acc in a docstring is fine"""\nx = "test_acc"\ny = "grad_norm/fc1"\n'
                   'z = f"neuron.{1}.name"\nw = "test accuracy"\n')
    try:
        found = literal_offences(bad, contract_names(), C.PREFIXES)
    finally:
        bad.unlink()
    assert [f.split(": ", 1)[1] for f in found] == ["'test_acc'", "'grad_norm/fc1'", "f-string 'neuron.'…"]


def test_no_logged_name_is_spelled_as_a_literal_outside_the_contract():
    names = contract_names()
    offences = [o for name, path in modules().items() if name != "training.contract"
                for o in literal_offences(path, names, C.PREFIXES)]
    assert offences == [], "\n".join(offences)


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for path in modules().values():
        text = path.read_text()
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert too_long == [], "\n".join(too_long)


@pytest.mark.parametrize("module", ["dashboard.read.store", "dashboard.read.cache", "training.location",
                                    "training.contract", "training.nets.snapshot_reader"])
def test_the_read_side_imports_without_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
