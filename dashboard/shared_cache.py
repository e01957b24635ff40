"""A cache on disk that every gunicorn worker of the dashboard shares (flask-caching's FileSystemCache).

Only what can never change goes in: a finished run's metric histories, snapshot list and snapshot arrays,
and results computed from them.  Values are stored as plain bytes: numpy .npz (loaded with
allow_pickle=False) or JSON, never pickle, so a planted file can at worst be wrong data, never code.

The directory is $DASHBOARD_CACHE_DIR, or mnistlab-dashboard-cache-<uid> in the system temp dir, with one
sub-folder per tracking URI so different stores never share entries.
"""
import functools
import hashlib
import io
import json
import os
import sys
import tempfile

import numpy as np
from cachelib.serializers import BaseSerializer
from flask_caching.backends.filesystemcache import FileSystemCache

ENV_DIR = "DASHBOARD_CACHE_DIR"
TIMEOUT_S = 7 * 24 * 3600  # entries are immutable; the timeout only lets a long-lived cache forget old runs
# Small entries (histories, epoch lists) and large ones (snapshots, activations) are counted apart, so a
# 1,000-run page's histories never push the arrays out, and the arrays stay within a few GB.
THRESHOLDS = {"small": 50_000, "arrays": 500}


class _PlainSerializer(BaseSerializer):
    """bytes as they are, anything else as JSON (the cache's own file count is an int); never pickle."""

    def dump(self, value, f, protocol=None) -> None:
        f.write(b"b" + value if isinstance(value, bytes) else b"j" + json.dumps(value).encode())

    def load(self, f):
        data = f.read()
        if data[:1] == b"b":
            return data[1:]
        if data[:1] == b"j":
            return json.loads(data[1:])
        return None


class _PlainFileSystemCache(FileSystemCache):
    serializer = _PlainSerializer()


def root() -> str:
    """The cache's top directory: $DASHBOARD_CACHE_DIR or a folder in the temp dir named after this user."""
    return os.environ.get(ENV_DIR) or os.path.join(tempfile.gettempdir(), f"mnistlab-dashboard-cache-{os.getuid()}")


def directory(uri: str | None = None) -> str:
    """This store's cache folder: one per tracking URI."""
    from training.tracking import tracking_uri  # here, so `python -m dashboard.serve` starts without torch
    return os.path.join(root(), hashlib.sha256((uri or tracking_uri()).encode()).hexdigest()[:16])


@functools.lru_cache(maxsize=16)
def _cache(top: str, folder: str, part: str):
    try:
        os.makedirs(top, mode=0o700, exist_ok=True)
        if os.stat(top).st_uid != os.getuid():  # e.g. planted in a shared /tmp by someone else
            raise PermissionError(f"{top} belongs to another user")
        return _PlainFileSystemCache(os.path.join(folder, part), threshold=THRESHOLDS[part],
                                     default_timeout=TIMEOUT_S, mode=0o600)
    except OSError as e:  # the dashboard still works, only slower: say so once per folder
        print(f"warning: shared dashboard cache off ({e}); set {ENV_DIR} to a writable folder", file=sys.stderr)
        return None


def _get(part: str, key: str):
    cache = _cache(root(), directory(), part)
    return None if cache is None else cache.get(key)


def _set(part: str, key: str, value) -> None:
    cache = _cache(root(), directory(), part)
    if cache is not None:
        cache.set(key, value)


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def get_arrays(key: str, large: bool = False) -> dict[str, np.ndarray] | None:
    data = _get("arrays" if large else "small", key)
    if not isinstance(data, bytes):
        return None
    try:
        return unpack(data)
    except Exception:  # a torn or foreign file: a miss, read the store again
        return None


def set_arrays(key: str, arrays: dict[str, np.ndarray], large: bool = False) -> None:
    _set("arrays" if large else "small", key, pack(arrays))


def get_json(key: str):
    return _get("small", key)


def set_json(key: str, value) -> None:
    _set("small", key, value)


def entries(large: bool = False) -> int:
    """How many entries this store's small or large part holds (for tests and benchmarks)."""
    cache = _cache(root(), directory(), "arrays" if large else "small")
    return 0 if cache is None else sum(1 for _ in cache._list_dir())
