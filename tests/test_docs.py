"""The README and docs/ as a reader meets them: a README read in five minutes, and nothing that points nowhere.

Every relative link and image in README.md and docs/*.md opens a file of this repository, an `#anchor` a
heading that GitHub gives that slug, a repository path in backticks a file that exists (and `::test_name`
a test defined there), and every `python -m X` one of our modules that `python -m` can run.  Folders move
(7c4cfb1 moved most of them); a reference rewritten by hand or by script is checked here, not by a reader.
Each check is a function of a folder, so the tests below also plant one fault in a copy and watch it fail.
"""
import os
import re
import shutil
from importlib.machinery import PathFinder
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
# Folders of ours that a path in backticks may start with; other backticked text is code, not a path.
PATH_ROOTS = ("training", "dashboard", "common", "benchmarks", "tests", "docs")

FENCE = re.compile(r"^\s*(```|~~~)")
ATX_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# Inline links and images, nested or not: every `](target)` or `](target "title")`.
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_TARGET = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
HTML_ANCHOR = re.compile(r"""<[a-z]+\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
PYTHON_M = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
CODE_PATH = re.compile(r"^((?:%s)/[\w./-]*\.\w+)(?:::(\w+))?$" % "|".join(PATH_ROOTS))
GITHUB_LINE_ANCHOR = re.compile(r"^L\d+(-L\d+)?$")


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks: a `#` in a bash block is no heading, `](x)` no link."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (github-slugger): its rendered text lower-cased, every character but
    letters, digits, `_`, `-` and spaces dropped, spaces made hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link renders as its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        if m := ATX_HEADING.match(line):
            slug = github_slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")  # GitHub numbers a repeated heading's anchor
    return found


def link_targets(text: str):
    for number, line in prose_lines(text):
        line = CODE_SPAN.sub("", line)  # `[a](b)` in backticks is code, not a link
        for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_TARGET):
            for target in pattern.findall(line):
                yield number, target


def broken_links(root: Path) -> list[str]:
    problems = []
    for doc in doc_files(root):
        where = doc.relative_to(root)
        for number, target in link_targets(doc.read_text(encoding="utf-8")):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue  # web addresses are not this test's to check
            path, _, anchor = unquote(target).partition("#")
            file = doc if not path else (root / path.lstrip("/") if path.startswith("/") else doc.parent / path)
            file = Path(os.path.normpath(file))  # `..` folded, symlinks kept: the repository's own view
            if not file.is_relative_to(root):
                problems.append(f"{where}:{number}: {target} leaves the repository")
            elif not file.exists():
                problems.append(f"{where}:{number}: {target} points at no file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                problems.append(f"{where}:{number}: {target} names no heading of {file.name}")
            elif anchor and file.suffix != ".md" and not GITHUB_LINE_ANCHOR.match(anchor):
                problems.append(f"{where}:{number}: {target}: a file that is not markdown has only line anchors")
    return problems


def find_module(name: str, root: Path):
    """The spec `python -m name` would run from root, found on root alone, importing nothing (not even the
    parent packages, as importlib.util.find_spec would); None where there is none."""
    parts = name.split(".")
    spec = PathFinder.find_spec(parts[0], [str(root)])
    for i in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            return None
        spec = PathFinder.find_spec(".".join(parts[:i + 1]), list(spec.submodule_search_locations))
    if spec is not None and spec.submodule_search_locations is not None:  # a package runs its __main__
        spec = PathFinder.find_spec(f"{name}.__main__", list(spec.submodule_search_locations))
    return spec


def unrunnable_modules(root: Path) -> list[str]:
    problems = []
    for doc in doc_files(root):
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for name in PYTHON_M.findall(line):
                if find_module(name, root) is None:
                    problems.append(f"{doc.relative_to(root)}:{number}: `python -m {name}` runs no module of ours")
    return problems


def missing_code_paths(root: Path) -> list[str]:
    problems = []
    for doc in doc_files(root):
        for number, line in prose_lines(doc.read_text(encoding="utf-8")):
            for _, span in CODE_SPAN.findall(line):
                m = CODE_PATH.match(span.strip())
                if not m:
                    continue
                path, test = m.groups()
                file = root / path
                if not file.is_file():
                    problems.append(f"{doc.relative_to(root)}:{number}: `{path}` is no file")
                elif test and not re.search(rf"^\s*(async\s+)?def {test}\(", file.read_text(encoding="utf-8"), re.M):
                    problems.append(f"{doc.relative_to(root)}:{number}: {path} defines no {test}")
    return problems


def readme_too_long(root: Path) -> list[str]:
    n = len((root / "README.md").read_text(encoding="utf-8").splitlines())
    return [f"README.md has {n} lines; at most {README_MAX_LINES}: move detail into docs/"] if n > README_MAX_LINES else []


CHECKS = (readme_too_long, broken_links, unrunnable_modules, missing_code_paths)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_readme_and_docs_pass(check):
    assert check(ROOT) == []


def test_github_slugs_of_headings_like_ours():
    # Anchors as GitHub renders them for these headings (checked by hand on github.com's rules).
    assert github_slug("Opening a run in MLflow's UI") == "opening-a-run-in-mlflows-ui"
    assert github_slug("The write side (`training/`)") == "the-write-side-training"
    assert github_slug("3. Grids") == "3-grids"
    assert github_slug("Neurons: what the verdicts and views mean") == "neurons-what-the-verdicts-and-views-mean"
    assert github_slug("Runs page on 10,000 runs") == "runs-page-on-10000-runs"
    assert github_slug("Where runs go") == "where-runs-go"
    assert github_slug("`mnistlab.step_path` — which code") == "mnistlabstep_path--which-code"


@pytest.fixture
def copy(tmp_path) -> Path:
    """The repository as the docs see it: README.md and docs/*.md copied (to plant faults in), all else linked."""
    tmp_path = tmp_path / "repo"  # tmp_path itself holds the autouse MLflow store
    (tmp_path / "docs").mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in ("README.md", "docs", ".git", ".venv"):
            (tmp_path / entry.name).symlink_to(entry)
    for entry in (ROOT / "docs").iterdir():
        if entry.suffix == ".md":
            shutil.copy(entry, tmp_path / "docs" / entry.name)
        else:
            (tmp_path / "docs" / entry.name).symlink_to(entry)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def plant(file: Path, text: str) -> None:
    file.write_text(file.read_text(encoding="utf-8") + "\n" + text + "\n", encoding="utf-8")


@pytest.mark.parametrize("where, text, check, fault", [
    ("README.md", "See [the guide](docs/no_such_page.md).", broken_links, "no_such_page.md points at no file"),
    ("README.md", "![shot](docs/screenshots/no_such.png)", broken_links, "no_such.png points at no file"),
    ("README.md", "[grids](docs/training.md#no-such-heading)", broken_links, "names no heading of training.md"),
    ("docs/team.md", "[up](#grids)", broken_links, "#grids names no heading of team.md"),  # it is `3-grids`
    ("docs/tracking.md", "[out](../../etc/passwd)", broken_links, "leaves the repository"),
    ("docs/tracking.md", "[ref]: ../training/no_such.py", broken_links, "no_such.py points at no file"),
    ("docs/neurons.md", "`.venv/bin/python -m training.no_such --help`", unrunnable_modules,
     "`python -m training.no_such` runs no module"),
    ("README.md", "`python -m common`", unrunnable_modules, "`python -m common` runs no module"),  # no __main__
    ("docs/guarantees.md", "| a promise | `tests/test_docs.py::test_no_such_thing` |", missing_code_paths,
     "defines no test_no_such_thing"),
    ("docs/training.md", "the kernel, `training/fused_sgd.c`", missing_code_paths, "`training/fused_sgd.c` is no file"),
    ("README.md", "\n" * README_MAX_LINES, readme_too_long, "at most 250"),
])
def test_a_planted_fault_is_found(copy, where, text, check, fault):
    assert check(copy) == [], "the copy must pass before a fault is planted"
    plant(copy / where, text)
    problems = check(copy)
    assert len(problems) == 1 and fault in problems[0], problems


def test_a_link_inside_code_is_not_a_link(copy):
    plant(copy / "README.md", "```\n[x](no_such.md)\n# no heading\n```\nand `[y](no_such.md)` inline")
    assert broken_links(copy) == []
