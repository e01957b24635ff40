"""The snapshot reader checks headers before data: np.load's results for good files, one line for bad ones,
and never an allocation beyond its budget."""
import io
import time
import tracemalloc
import zipfile

import numpy as np
import numpy.lib.format as npy
import pytest

from training.nets.snapshot_reader import SnapshotError, read_snapshot

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
    (np.array([object()], dtype=object), r"Python objects \(a pickle\).*never unpickled"),
    (np.zeros(2, dtype=np.longdouble), "not a plain number"),  # 16 bytes a value: wider than any snapshot needs
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


# ---- what a run's snapshot may hold: the plan from its params, and the checks headers cannot make ----------

def test_the_plan_for_a_run_of_ours_is_every_arrays_exact_shape_and_a_budget_from_its_parameter_count():
    from training.nets.snapshot_reader import HEADROOM_BYTES, MAX_ITEMSIZE, plan
    from training.nets.architecture import run_layers
    from training.config import RunConfig
    from training.nets.models import n_params  # the trainer's own count, via torch's side of the import
    config = RunConfig(sizes=(784, 20, 10))
    p = plan(run_layers(config.as_params()))
    assert p.wanted["weight/fc1"] == (20, 784) and p.wanted["bias/fc2"] == (10,)
    assert p.wanted["pred/class"] == (10_000,) and p.wanted["act_edges/fc2"] == (41,)
    records = 2 * (40 + 41) + 21 + 2 * 20 + 2 * 10_000
    assert p.max_bytes == (n_params(config) + records) * MAX_ITEMSIZE + HEADROOM_BYTES


def test_a_run_with_only_layer_names_allows_any_shape_within_its_logged_parameter_count():
    from training.nets.snapshot_reader import MAX_SNAPSHOT_BYTES, plan
    from training.nets.architecture import run_layers
    names_only = run_layers({"layers": "a,b", "n_params": "1000"})
    assert names_only.layers is None and names_only.names == ("a", "b") and "not a run of" in names_only.problem
    p = plan(names_only, "1000")
    assert p.wanted["weight/a"] is None and p.wanted["pred/confidence"] == (10_000,)
    assert p.max_bytes < 2 * MB
    assert plan(names_only, "many").max_bytes == MAX_SNAPSHOT_BYTES  # no count: the ceiling


def test_contents_are_checked_and_given_the_dtypes_the_pages_compute_with():
    from training.nets.snapshot_reader import check_contents
    good = {"weight/a": np.ones((2, 3), ">f8"), "pred/class": np.array([0, 9], np.int64),
            "act_hist/a": np.arange(3, dtype=np.int64), "act_edges/a": np.linspace(0, 1, 4, dtype=np.float32)}
    out = check_contents(good, ["a"])
    assert out["weight/a"].dtype == np.float32 and out["weight/a"].dtype.isnative
    assert out["pred/class"].dtype == np.uint8 and out["act_hist/a"].dtype == np.float64
    for bad, words in [({"pred/class": np.array([3, 12])}, r"pred/class holds 3–12, expected digits 0–9"),
                       ({"pred/class": np.array([1.5])}, "expected whole numbers"),
                       ({"act_hist/a": np.zeros(3), "act_edges/a": np.zeros(3)}, "do not match")]:
        with pytest.raises(SnapshotError, match=words):
            check_contents(bad, ["a"])
