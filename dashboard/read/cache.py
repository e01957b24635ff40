"""Every cache of the dashboard, and the one rule they follow.

The rule: only what cannot change is cached.
- A finished run's metric histories, snapshot list and snapshot arrays, and anything computed from them
  (activations, statistics, matchings), keyed by run id (and epoch, layer...).  On disk the key also
  holds the run's end time, so a run that is ever reopened and ends again is read afresh.
- A logged snapshot never changes, even while its run goes on, so snapshots are cached for running runs too.
- A running run's metrics and status are read fresh on every request.

Two levels:
- in this process: `LRU`s and `memoize`d functions, every key prefixed with the tracking URI so two
  stores never share an entry; `clear()` empties them all at once (tests, a store switched under a
  long-lived process).
- on disk, shared by every gunicorn worker (flask-caching's FileSystemCache): `get_arrays`/`set_arrays`,
  `get_json`/`set_json`.  Values are plain bytes, numpy .npz loaded with allow_pickle=False or JSON, never
  pickle, so a planted file can at worst be wrong data, never code.  The directory is $DASHBOARD_CACHE_DIR,
  or mnistlab-dashboard-cache-<uid> in the system temp dir, with one sub-folder per tracking URI.

Also here: `request_memo`, a dict that lives for one HTTP request (a run read once per request).
"""
import functools
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
from collections import OrderedDict

import flask
import numpy as np
from cachelib.serializers import BaseSerializer
from flask_caching.backends.filesystemcache import FileSystemCache

from training.location import tracking_uri

ENV_DIR = "DASHBOARD_CACHE_DIR"
TIMEOUT_S = 7 * 24 * 3600  # entries are immutable; the timeout only lets a long-lived cache forget old runs
# Small entries (histories, epoch lists) and large ones (snapshots, activations) are counted apart, so a
# 1,000-run page's histories never push the arrays out, and the arrays stay within a few GB.
THRESHOLDS = {"small": 50_000, "arrays": 500}

_registry: list = []  # every in-process cache, for clear()


# ---- in this process -------------------------------------------------------------------------------

class LRU:
    """A thread-safe least-recently-used map; keys get the tracking URI in front."""

    def __init__(self, size: int):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()
        _registry.append(self)

    def get(self, key):
        with self.lock:
            full = (tracking_uri(), key)
            if full in self.data:
                self.data.move_to_end(full)
                return self.data[full]
        return None

    def put(self, key, value):
        with self.lock:
            full = (tracking_uri(), key)
            self.data[full] = value
            self.data.move_to_end(full)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


def memoize(maxsize: int):
    """functools.lru_cache whose key also holds the tracking URI, and which clear() empties.

    For functions of (run id, epoch, layer...) whose answer never changes for a finished run or a logged
    snapshot; the caller checks that before calling.
    """
    def wrap(fn):
        @functools.lru_cache(maxsize=maxsize)
        def keyed(_uri, *args):
            return fn(*args)

        @functools.wraps(fn)
        def call(*args):
            return keyed(tracking_uri(), *args)

        call.cache_clear = keyed.cache_clear
        _registry.append(call)
        return call
    return wrap


def request_memo(name: str) -> dict | None:
    """A dict for this HTTP request only (None outside a request): what one callback reads twice, read once."""
    if not flask.has_request_context():
        return None
    memos = flask.g.setdefault("mnistlab_memos", {})
    return memos.setdefault(name, {})


def clear() -> None:
    """Empty every in-process cache (the disk cache is per store and keyed by end time: it needs no clearing)."""
    for cache in _registry:
        (cache.clear if isinstance(cache, LRU) else cache.cache_clear)()


# ---- on disk, shared by the workers ------------------------------------------------------------------

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


CACHE_HASH = hashlib.sha256  # names each entry's file; given explicitly so entries() can tell cachelib's own count file


class _PlainFileSystemCache(FileSystemCache):
    serializer = _PlainSerializer()


def root() -> str:
    """The disk cache's top directory: $DASHBOARD_CACHE_DIR or a folder in the temp dir named after this user."""
    return os.environ.get(ENV_DIR) or os.path.join(tempfile.gettempdir(), f"mnistlab-dashboard-cache-{os.getuid()}")


def directory(uri: str | None = None) -> str:
    """This store's disk cache folder: one per tracking URI."""
    return os.path.join(root(), hashlib.sha256((uri or tracking_uri()).encode()).hexdigest()[:16])


@functools.lru_cache(maxsize=16)
def _disk(top: str, folder: str, part: str):
    try:
        os.makedirs(top, mode=0o700, exist_ok=True)
        if os.stat(top).st_uid != os.getuid():  # e.g. planted in a shared /tmp by someone else
            raise PermissionError(f"{top} belongs to another user")
        return _PlainFileSystemCache(os.path.join(folder, part), threshold=THRESHOLDS[part],
                                     default_timeout=TIMEOUT_S, mode=0o600, hash_method=CACHE_HASH)
    except OSError as e:  # the dashboard still works, only slower: say so once per folder
        print(f"warning: shared dashboard cache off ({e}); set {ENV_DIR} to a writable folder", file=sys.stderr)
        return None


def _get(part: str, key: str):
    disk = _disk(root(), directory(), part)
    return None if disk is None else disk.get(key)


def _set(part: str, key: str, value) -> None:
    disk = _disk(root(), directory(), part)
    if disk is not None:
        disk.set(key, value)


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
    folder = os.path.join(directory(), "arrays" if large else "small")
    if _disk(root(), directory(), "arrays" if large else "small") is None or not os.path.isdir(folder):
        return 0
    # one file an entry (named by the hash of its key), beside cachelib's own entry count and half-written files
    bookkeeping = CACHE_HASH(b"__wz_cache_count").hexdigest()
    return sum(1 for name in os.listdir(folder) if name != bookkeeping and not name.endswith(".__wz_cache"))
