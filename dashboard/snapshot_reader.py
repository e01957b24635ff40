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
"""
import zipfile

import numpy as np
import numpy.lib.format as npy

PLAIN_KINDS = "biuf"
MAX_HEADER_BYTES = 10_000  # numpy's own limit for a trusted header; ours are a few dozen bytes


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
            if dtype.kind not in PLAIN_KINDS or dtype.hasobject or dtype.fields is not None:
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
