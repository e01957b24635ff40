"""Start-up: the data's sha256 is remembered only while each file stays the same file, and nothing slow
is imported before it is needed."""
import os
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO
from tests.idx import write_tiny_mnist
from common import file_digests as data_digests
from training.nets import data as mnist

TRAIN_IMAGES = "train-images-idx3-ubyte"


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """A private digest cache, and a count of the files really hashed."""
    monkeypatch.setenv("MNISTLAB_DIGEST_CACHE", str(tmp_path / "cache" / "digests.json"))
    hashed = []
    real = data_digests.hash_file
    monkeypatch.setattr(data_digests, "hash_file", lambda path: hashed.append(path.name) or real(path))
    return hashed


def settled_tiny_mnist(root, seed=0):
    """Tiny MNIST files, old enough for their digests to be remembered (see data_digests.RACY_SECONDS)."""
    sums = write_tiny_mnist(root, seed=seed)
    time.sleep(data_digests.RACY_SECONDS + 0.05)
    return sums


def test_a_second_verify_of_unchanged_files_hashes_nothing(tmp_path, counted):
    sums = settled_tiny_mnist(tmp_path / "d")
    mnist.verify(tmp_path / "d", sums)
    assert len(counted) == 4
    mnist.verify(tmp_path / "d", sums)
    assert len(counted) == 4


def test_a_byte_changed_with_size_and_mtime_restored_is_caught(tmp_path, counted):
    sums = settled_tiny_mnist(tmp_path / "d")
    mnist.verify(tmp_path / "d", sums)
    mnist.verify(tmp_path / "d", sums)
    assert len(counted) == 4
    path = mnist.raw_dir(tmp_path / "d") / TRAIN_IMAGES
    st = path.stat()
    with open(path, "r+b") as f:  # same inode, same size
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -d` back to the old mtime
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_ino == st.st_ino
    with pytest.raises(mnist.DataError, match=f"{TRAIN_IMAGES}: sha256 mismatch"):
        mnist.verify(tmp_path / "d", sums)
    assert counted.count(TRAIN_IMAGES) == 2


def test_a_file_replaced_by_another_is_hashed_again(tmp_path, counted):
    sums = write_tiny_mnist(tmp_path / "d")
    other = settled_tiny_mnist(tmp_path / "e", seed=1)
    mnist.verify(tmp_path / "d", sums)
    target = mnist.raw_dir(tmp_path / "d") / TRAIN_IMAGES
    source = mnist.raw_dir(tmp_path / "e") / TRAIN_IMAGES
    st = target.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    source.replace(target)  # a new inode under the old name, same size and mtime
    with pytest.raises(mnist.DataError, match="sha256 mismatch"):
        mnist.verify(tmp_path / "d", sums)
    assert mnist.verify(tmp_path / "d", {**sums, TRAIN_IMAGES: other[TRAIN_IMAGES]})


def test_a_corrupt_cache_file_only_means_hashing(tmp_path, counted):
    sums = write_tiny_mnist(tmp_path / "d")
    data_digests.cache_path().parent.mkdir(parents=True)
    data_digests.cache_path().write_text("{not json")
    assert mnist.verify(tmp_path / "d", sums) == sums
    assert len(counted) == 4


def test_a_file_written_just_now_is_not_remembered_yet(tmp_path, counted):
    sums = write_tiny_mnist(tmp_path / "d")
    mnist.verify(tmp_path / "d", sums)
    mnist.verify(tmp_path / "d", sums)
    assert len(counted) == 8


def test_the_remembered_digest_is_the_files_sha256(tmp_path, counted):
    sums = settled_tiny_mnist(tmp_path / "d")
    mnist.verify(tmp_path / "d", sums)
    for name, digest in sums.items():
        assert data_digests.sha256_of(mnist.raw_dir(tmp_path / "d") / name) == digest


def test_mnist_read_without_torchvision_equals_torchvision_s_reading():
    from torchvision.datasets import MNIST
    root = mnist.fetch()
    for train in (True, False):
        images, labels = mnist._raw_split(root, train)
        ds = MNIST(str(root), train=train, download=False)
        assert torch.equal(images, ds.data) and torch.equal(labels, ds.targets.to(torch.int64))


def test_loading_the_data_and_the_grid_code_never_imports_torchvision():
    code = ("import sys, training.nets.data, training.sweep.grid_run, training.train; training.nets.data.load(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
