"""The snapshot reader checks headers before data: np.load's results for good files, one line for bad ones,
and never an allocation beyond its budget."""
import io
import time
import tracemalloc
import zipfile

import numpy as np
import numpy.lib.format as npy
import pytest

from dashboard.snapshot_reader import SnapshotError, read_snapshot

MB = 1_000_000


def _npz(path, compressed=False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def _member_with_header(path, key, shape, dtype="<f4", payload=b"\0" * 64):
    """An .npz whose member declares `shape` in its header but holds only `payload`: what a broken or hostile
    writer can produce, and np.savez never would."""
    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{key}.npy", header.getvalue() + payload)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_a_good_snapshot_reads_as_np_load_reads_it(tmp_path, compressed):
    rng = np.random.default_rng(0)
    arrays = {"weight/fc1": rng.normal(size=(20, 784)).astype(np.float32), "bias/fc1": np.arange(20.0),
              "pred/class": rng.integers(0, 10, 10_000).astype(np.uint8), "flag": np.array([True, False]),
              "fortran": np.asfortranarray(rng.normal(size=(3, 4)))}
    path = _npz(tmp_path / "s.npz", compressed, **arrays)
    got = read_snapshot(path, {k: None for k in arrays}, max_bytes=10 * MB)
    with np.load(path, allow_pickle=False) as z:
        for key in arrays:
            np.testing.assert_array_equal(got[key], z[key])
            assert got[key].dtype == z[key].dtype


def test_only_wanted_keys_are_read_and_missing_ones_are_simply_absent(tmp_path):
    path = _npz(tmp_path / "s.npz", a=np.zeros(3), b=np.zeros(4))
    assert set(read_snapshot(path, {"a": (3,), "c": (1,)}, MB)) == {"a"}


def test_a_shape_other_than_the_runs_layers_say_is_refused_naming_the_array(tmp_path):
    path = _npz(tmp_path / "s.npz", **{"weight/fc1": np.zeros((30, 784), np.float32)})
    with pytest.raises(SnapshotError, match=r"weight/fc1 is float32 \(30, 784\), expected shape \(20, 784\)"):
        read_snapshot(path, {"weight/fc1": (20, 784)}, 10 * MB)


@pytest.mark.parametrize("array, words", [
    (np.array([object()], dtype=object), "not a plain number"),
    (np.zeros(2, dtype=[("x", "<f4")]), "not a plain number"),
    (np.zeros(2, dtype=np.complex64), "not a plain number"),
    (np.array(["text"]), "not a plain number"),
])
def test_arrays_that_are_not_plain_numbers_are_refused(tmp_path, array, words):
    path = tmp_path / "s.npz"
    np.savez(path, a=array)  # object arrays are pickled inside: never unpickled here
    with pytest.raises(SnapshotError, match=words):
        read_snapshot(path, {"a": None}, MB)


def test_a_100_gb_declared_array_is_refused_in_under_a_second_without_allocating_it(tmp_path):
    path = _member_with_header(tmp_path / "huge.npz", "weight/fc1", (25_000_000_000,))  # 100 GB of float32
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(SnapshotError, match="weight/fc1 declares .* 100,000 MB"):
        read_snapshot(path, {"weight/fc1": None}, max_bytes=10 * MB)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 1 * MB, peak


def test_a_compressed_member_counts_by_its_decompressed_size(tmp_path):
    path = _npz(tmp_path / "bomb.npz", compressed=True, a=np.zeros(50 * MB // 8))  # 50 MB of zeros, ~50 kB zipped
    assert path.stat().st_size < MB
    tracemalloc.start()
    with pytest.raises(SnapshotError, match="a declares"):
        read_snapshot(path, {"a": None}, max_bytes=10 * MB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * MB, peak


def test_the_budget_is_for_the_whole_file_not_each_array(tmp_path):
    path = _npz(tmp_path / "s.npz", a=np.zeros(100_000), b=np.zeros(100_000))  # 0.8 MB each
    read_snapshot(path, {"a": None, "b": None}, max_bytes=2 * MB)
    with pytest.raises(SnapshotError, match="b declares"):
        read_snapshot(path, {"a": None, "b": None}, max_bytes=MB)


def test_truncated_and_lying_files_are_refused_in_one_line(tmp_path):
    good = _npz(tmp_path / "s.npz", a=np.arange(1000.0))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    lying = _member_with_header(tmp_path / "lie.npz", "a", (1000,), payload=b"\0" * 100)
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("hello")
    for path in (cut, lying, not_zip):
        with pytest.raises(SnapshotError) as e:
            read_snapshot(path, {"a": None}, MB)
        assert "\n" not in str(e.value)
