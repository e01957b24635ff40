"""A file's sha256, remembered across processes while the file stays the same file.

Hashing the four MNIST files takes seconds on every start.  A digest is kept under
the file's resolved path with its size, mtime, ctime, inode and device: rewriting
the file changes its mtime and ctime, replacing it changes its inode, and resetting
the mtime (`touch -d`) still moves the ctime, so any change means a fresh hash.
A digest is remembered only if the file's stat was the same before and after hashing and
the file was last changed at least RACY_SECONDS before: timestamps are coarse (a kernel
tick), so a file rewritten within the tick it was hashed in could keep its stat (git's
"racy clean" problem).
The cache is one JSON file ($MNISTLAB_DIGEST_CACHE, default
~/.cache/mnistlab/digests.json); an unreadable or unwritable one just means hashing.
"""
import hashlib
import json
import os
import time
from pathlib import Path

CHUNK = 1 << 20
RACY_SECONDS = 1.0


def cache_path() -> Path:
    if env := os.environ.get("MNISTLAB_DIGEST_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistlab" / "digests.json"


def identity(st: os.stat_result) -> list[int]:
    """What must stay equal for a remembered digest to still be the file's."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_cache() -> dict:
    try:
        cache = json.loads(cache_path().read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(key: str, ident: list[int], digest: str) -> None:
    path = cache_path()
    cache = {k: v for k, v in _read_cache().items() if os.path.exists(k)}  # forget files since deleted
    cache[key] = {"stat": ident, "sha256": digest}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        part.write_text(json.dumps(cache))
        part.replace(path)  # atomic: a concurrent reader sees the old cache or the new one
    except OSError:
        pass


def sha256_of(path: Path) -> str:
    """The file's sha256: remembered if the file is unchanged since it was hashed, else hashed now."""
    path = Path(path).resolve()
    key = str(path)
    before = identity(path.stat())
    entry = _read_cache().get(key)
    if isinstance(entry, dict) and entry.get("stat") == before and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hash_file(path)
    settled = time.time_ns() - max(before[1], before[2]) > RACY_SECONDS * 1e9
    if settled and identity(path.stat()) == before:
        _remember(key, before, digest)
    return digest
