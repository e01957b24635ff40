"""Reading a snapshot .npz that nobody vouches for: headers first, then only what they promise.

Every run in a store is untrusted input: written by another tool, another version or a broken
script.  np.load would allocate whatever an array's header declares (a 100 GB shape costs a
MemoryError at best) and trusts a zip member's sizes.  Here each member's .npy header is read
and checked before a byte of its data:
- the dtype must be a plain number (bool, int, uint, float): no objects, no records, nothing pickled;
- the shape must be the one the caller expects for that key, when it expects one;
- the bytes it declares count against a budget for the whole file (a compressed member counts by
  its decompressed size), and exactly those bytes are read, so no member can make us allocate more.
Keys the caller does not want are never read.  Every refusal is one line naming the array and what
was expected (SnapshotError).

`plan` says what a run's snapshot may hold, from its layers (training.nets.architecture): the keys, their
shapes and the byte budget; `check_contents` then checks what headers cannot (predicted classes are
digits, histograms match their edges) and gives every array the dtype the pages compute with.
"""
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np
import numpy.lib.format as npy

from training import contract as C
from training.config import N_CLASSES
from training.nets.architecture import N_TEST, RunLayers, record_shapes, snapshot_shapes

PLAIN_KINDS = "biuf"
MAX_ITEMSIZE = 8  # float64, int64: nothing a snapshot holds needs more (float128 is refused)
MAX_HEADER_BYTES = 10_000  # numpy's own limit for a trusted header; ours are a few dozen bytes
# The budget: every value at MAX_ITEMSIZE bytes, plus room for zip and .npy headers.  A run whose
# parameter count is unknown (no config of ours and no n_params param) gets the ceiling, which no
# run's budget ever exceeds: our largest shipped net holds 0.1 M parameters (0.4 MB).
HEADROOM_BYTES = 1_000_000
MAX_SNAPSHOT_BYTES = 1 << 30


class SnapshotError(ValueError):
    """A snapshot file that is not what its run says it should be; the message is one line for a person."""


def _header(stream, key: str):
    try:
        version = npy.read_magic(stream)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read(stream, max_header_size=MAX_HEADER_BYTES)
    except Exception as e:  # not an .npy member, a version 3 header, a literal that isn't a header...
        raise SnapshotError(f"{key} has no readable array header ({str(e).splitlines()[0][:80]})") from None
    return shape, fortran, dtype


def _describe(shape, dtype) -> str:
    return f"{dtype} {tuple(shape)}"


def read_snapshot(path, wanted: dict[str, tuple | None], max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of `wanted` (key -> expected shape, or None for any shape) that the file holds.

    Keys absent from the file are simply absent from the answer (the pages say what is missing);
    anything else wrong raises SnapshotError before more than `max_bytes` of array data is read.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SnapshotError(f"not a readable .npz ({str(e)[:80]})") from None
    out, budget = {}, max_bytes
    with archive:
        members = {info.filename[:-len(".npy")]: info for info in archive.infolist()
                   if info.filename.endswith(".npy")}
        for key, expected in wanted.items():
            if key not in members:
                continue
            info = members[key]
            array = _read_member(archive, info, key, expected, budget)
            budget -= array.nbytes
            out[key] = array
    return out


def _read_member(archive, info, key, expected, budget) -> np.ndarray:
    try:
        with archive.open(info) as stream:
            shape, fortran, dtype = _header(stream, key)
            if dtype.hasobject:
                raise SnapshotError(f"{key} holds Python objects (a pickle), not plain numbers: refused, never unpickled")
            if dtype.kind not in PLAIN_KINDS or dtype.fields is not None or dtype.itemsize > MAX_ITEMSIZE:
                raise SnapshotError(f"{key} is {dtype}, not a plain number array")
            if expected is not None and tuple(shape) != tuple(expected):
                raise SnapshotError(f"{key} is {_describe(shape, dtype)}, expected shape {tuple(expected)} "
                                    f"from the run's layers")
            nbytes = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)  # float: a huge shape can't overflow
            if nbytes > budget:
                raise SnapshotError(f"{key} declares {_describe(shape, dtype)} = {nbytes / 1e6:,.0f} MB, more than "
                                    f"this run's weights and test-set records can take ({budget / 1e6:,.1f} MB left)")
            if info.file_size < nbytes:  # the zip says the member is smaller than its header claims
                raise SnapshotError(f"{key} is truncated: its header declares {nbytes:,} bytes, "
                                    f"the file holds {info.file_size:,}")
            data = stream.read(nbytes)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        if isinstance(e, SnapshotError):
            raise
        raise SnapshotError(f"{key} cannot be read ({str(e).splitlines()[0][:80]})") from None
    if len(data) != nbytes:
        raise SnapshotError(f"{key} is truncated: {len(data):,} of {nbytes:,} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


@dataclass(frozen=True)
class Plan:
    """What one run's snapshots may hold: key -> expected shape (None: any), and the bytes they may take."""
    wanted: dict
    max_bytes: int


def plan(run: RunLayers, declared_params: str | None = None) -> Plan:
    """The plan for a run: exact shapes from its config's layers; for a run with only layer names, any
    shape within a budget from its logged parameter count (`declared_params`, the n_params param)."""
    if run.layers is not None:
        wanted = snapshot_shapes(run.layers)
        values = sum(int(np.prod(shape, dtype=np.float64)) for shape in wanted.values())
    else:
        wanted = {k: None for name in run.names for k in (C.weight_key(name), C.bias_key(name),
                                                         C.act_hist_key(name), C.act_edges_key(name))}
        fixed = {k: v for k, v in record_shapes([]).items() if k in (C.PRED_CLASS, C.PRED_CONFIDENCE)}
        wanted |= {C.CONF_EDGES: None, C.CONF_HIST_CORRECT: None, C.CONF_HIST_INCORRECT: None} | fixed
        count = str(declared_params or "").strip()
        values = int(count) + 2 * N_TEST if count.isdigit() and len(count) < 12 else None
    max_bytes = MAX_SNAPSHOT_BYTES if values is None else min(MAX_SNAPSHOT_BYTES, values * MAX_ITEMSIZE + HEADROOM_BYTES)
    return Plan(wanted, int(max_bytes))


def _pair(arrays: dict, counts_key: str, edges_key: str) -> None:
    if counts_key in arrays and edges_key in arrays:
        counts, edges = arrays[counts_key], arrays[edges_key]
        if counts.ndim != 1 or edges.shape != (len(counts) + 1,):
            raise SnapshotError(f"{counts_key} {counts.shape} and {edges_key} {edges.shape} do not match: "
                                f"expected n counts and n + 1 edges")


def check_contents(arrays: dict[str, np.ndarray], layer_names) -> dict[str, np.ndarray]:
    """What headers cannot show, checked; each array in the dtype the pages use (float32 weights, as torch
    wants them; uint8 classes; float64 histograms), in native byte order."""
    for name in layer_names:
        _pair(arrays, C.act_hist_key(name), C.act_edges_key(name))
    for key in (C.CONF_HIST_CORRECT, C.CONF_HIST_INCORRECT):
        _pair(arrays, key, C.CONF_EDGES)
    if C.PRED_CLASS in arrays:
        pred = arrays[C.PRED_CLASS]
        if pred.dtype.kind not in "biu":
            raise SnapshotError(f"{C.PRED_CLASS} is {pred.dtype}, expected whole numbers (the predicted digits)")
        if pred.size and (pred.min() < 0 or pred.max() >= N_CLASSES):
            raise SnapshotError(f"{C.PRED_CLASS} holds {int(pred.min())}–{int(pred.max())}, expected digits "
                                f"0–{N_CLASSES - 1}")
    out = {}
    for key, a in arrays.items():
        if key == C.PRED_CLASS:
            out[key] = a.astype(np.uint8, copy=False)
        elif key.startswith((C.weight_key(""), C.bias_key(""))) or key == C.PRED_CONFIDENCE:
            out[key] = a.astype(np.float32, copy=False)
        else:
            out[key] = a.astype(np.float64, copy=False)
    return out


def download_and_read(client, run_id: str, path: str, wanted: dict[str, tuple | None], max_bytes: int) -> dict[str, np.ndarray]:
    """A run's .npz artifact, fetched with `client` (an MlflowClient) and read by read_snapshot.  SnapshotError,
    in one line, if it cannot be downloaded or is not what `wanted` says."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as e:  # noqa: BLE001 (listed but gone, or the server failed: one line for the caller)
            raise SnapshotError(f"it cannot be downloaded ({str(e).splitlines()[0][:120]})") from None
        return read_snapshot(local, wanted, max_bytes)


def download_checked(client, run_id: str, path: str, file_size: int | None, run: RunLayers,
                     declared_params: str | None = None) -> dict[str, np.ndarray]:
    """One snapshot of a run, checked whole: refused before it is fetched if its listed size is over the
    run's budget (plan), then read and checked against the run's layers (check_contents).  SnapshotError,
    in one line that leaves naming the file to the caller."""
    budget = plan(run, declared_params)
    if (file_size or 0) > budget.max_bytes:
        raise SnapshotError(f"the file is {file_size / 1e6:,.0f} MB, more than this run's weights and "
                            f"test-set records can take ({budget.max_bytes / 1e6:,.1f} MB)")
    return check_contents(download_and_read(client, run_id, path, budget.wanted, budget.max_bytes), run.names)
