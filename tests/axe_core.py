"""axe-core, the accessibility checker tests/test_accessibility.py injects into each page.

From npm (the package Deque publishes), pinned and checked by sha256 like the plotly.js bundle
(dashboard/serving/lean_pages.py), into the virtual environment: `make browser` runs
`python -m tests.axe_core`, so a fresh CI machine has it before `make test` starts.
"""
import hashlib
import sys
from pathlib import Path

from dashboard.serving import npm_file

PACKAGE = "axe-core"
VERSION = "4.14.1"  # the latest 4.14 patch; the version issue #30 measured with
SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"  # package/axe.min.js


def script_path() -> Path:
    """Where `make browser` puts axe.min.js: inside the virtual environment, beside the plotly.js bundle."""
    return Path(sys.prefix) / "share" / "mnistlab" / f"axe-core-{VERSION}.min.js"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed() -> bool:
    path = script_path()
    return path.is_file() and _sha256(path.read_bytes()) == SHA256


def fetch() -> str:
    """Fetch axe.min.js from npm into script_path(), checked by sha256.  Returns what happened, in one line."""
    path = script_path()
    if installed():
        return f"axe-core {VERSION}: already installed"
    failed = npm_file.fetch(PACKAGE, VERSION, "axe.min.js", SHA256, path)
    if failed:
        return f"axe-core {VERSION}: {failed}; the accessibility test cannot run (npm: apt-get install npm)"
    return f"axe-core {VERSION}: installed in {path.parent}"


if __name__ == "__main__":
    print(fetch())
