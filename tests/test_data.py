"""MNIST files are verified byte for byte before anything trains on them."""
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, all_runs
from tests.idx import write_tiny_mnist
from training.nets import data as mnist

TRAIN_IMAGES = "train-images-idx3-ubyte"


@pytest.fixture
def tiny(tmp_path):
    sums = write_tiny_mnist(tmp_path)
    return tmp_path, sums


def test_verified_tiny_files_load_as_resident_tensors(tiny):
    root, sums = tiny
    d = mnist.load(root, checksums=sums)
    assert d.train_x.shape == (50, 784) and d.test_x.shape == (20, 784)
    assert d.train_x.dtype.is_floating_point and 0.0 <= float(d.train_x.min()) and float(d.train_x.max()) <= 1.0
    assert d.train_y.shape == (50,) and int(d.train_y.max()) <= 9


def test_train_size_keeps_the_first_images(tiny):
    root, sums = tiny
    full, part = mnist.load(root, checksums=sums), mnist.load(root, train_size=7, checksums=sums)
    assert part.train_x.shape == (7, 784)
    assert (part.train_x == full.train_x[:7]).all()


def _corrupt(path, how):
    blob = bytearray(path.read_bytes())
    if how == "truncated":
        blob = blob[:-100]
    elif how == "magic":
        blob[3] ^= 0x01
    elif how == "count":
        blob[7] += 1
    elif how == "flipped":
        blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("how, message", [
    ("missing", "missing"), ("truncated", "truncated"), ("magic", "wrong magic number"),
    ("count", "truncated"), ("flipped", "sha256 mismatch")])
def test_a_bad_file_is_named_with_what_to_do(tiny, how, message):
    root, sums = tiny
    path = mnist.raw_dir(root) / TRAIN_IMAGES
    if how == "missing":
        path.unlink()
    else:
        _corrupt(path, how)
    with pytest.raises(mnist.DataError) as e:
        mnist.load(root, checksums=sums)
    text = str(e.value)
    assert TRAIN_IMAGES in text and message in text and "\n" not in text
    assert "make data" in text


def test_label_count_must_match_image_count(tmp_path):
    sums = write_tiny_mnist(tmp_path)
    from tests.idx import idx_labels
    path = mnist.raw_dir(tmp_path) / "train-labels-idx1-ubyte"
    path.write_bytes(idx_labels(np.zeros(49, dtype=np.uint8)))
    import hashlib
    sums["train-labels-idx1-ubyte"] = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(mnist.DataError, match="49 labels for 50 images"):
        mnist.verify(tmp_path, sums)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_idx_header_check_never_crashes_on_arbitrary_bytes(tmp_path, blob):
    path = tmp_path / TRAIN_IMAGES
    path.write_bytes(blob)
    try:
        count = mnist.check_idx_header(path)
    except mnist.DataError as e:
        assert TRAIN_IMAGES in str(e)
    else:
        assert len(blob) == 16 + count * 784


def test_real_mnist_verifies_against_the_published_sums():
    root = mnist.fetch()
    assert mnist.verify(root) == mnist.SHA256
    d = mnist.load(root)
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert np.bincount(d.test_y.numpy()).tolist()[:3] == [980, 1135, 1032]


def test_training_on_a_flipped_byte_exits_nonzero_and_creates_no_run(tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(mnist.raw_dir(mnist.data_root().resolve()), mnist.raw_dir(root))
    bad = mnist.raw_dir(root) / "t10k-labels-idx1-ubyte"
    _corrupt(bad, "flipped")
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    env = {"MNIST_ROOT": str(root), "MLFLOW_TRACKING_URI": uri, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "training.train", "--epochs", "1", "--train-size", "100"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("error:") and "t10k-labels-idx1-ubyte" in lines[-1]
    assert "Traceback" not in result.stderr
    # Nothing wrote to the store, so no run can be there; a store that exists must hold none.
    assert not (store / "mlflow.db").exists() or all_runs(uri) == []


def test_test_images_for_display_are_the_verified_test_split_as_stored(tiny):
    root, sums = tiny
    images, labels = mnist.load_test_images(root, checksums=sums)
    d = mnist.load(root, checksums=sums)
    assert images.dtype == torch.uint8 and images.shape == (20, 28, 28)
    assert torch.equal(images.reshape(20, -1).float() / 255, d.test_x) and torch.equal(labels, d.test_y)
    _corrupt(mnist.raw_dir(root) / "t10k-images-idx3-ubyte", "flipped")
    with pytest.raises(mnist.DataError, match="t10k-images-idx3-ubyte"):
        mnist.load_test_images(root, checksums=sums)


def test_the_shared_test_set_is_the_verified_split_read_once_and_read_only():
    from common import mnist_idx
    images, labels = mnist_idx.test_set()
    ref_images, ref_labels = mnist.load_test_images()  # read afresh, through the tensors' own path
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28) and labels.dtype == np.int64
    assert np.array_equal(images, ref_images.numpy()) and np.array_equal(labels, ref_labels.numpy())
    again = mnist_idx.test_set()
    assert again[0] is images and again[1] is labels  # one copy per process, for every caller
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0] = 1  # no caller can change what the next one sees


def test_the_shared_test_set_refuses_files_that_are_not_the_published_ones(tiny):
    from common import mnist_idx
    root, _ = tiny  # well-formed IDX files, but not MNIST's sha256s
    with pytest.raises(mnist_idx.MnistFileError, match="t10k-images-idx3-ubyte: sha256 mismatch"):
        mnist_idx.test_set(root)
