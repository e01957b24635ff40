"""MNIST's four IDX files as numpy: where they live, their published sha256s, their headers, and the test set.

The one reader of the raw files, for both sides: training.nets.data builds its tensors on it, the dashboard
reads the test images and a prefix of the training set through it.  Files live in torchvision's layout,
<root>/MNIST/raw/<name>.  Nothing is read until the files asked for have passed their header check and
their sha256 (remembered per file by common.file_digests while the file stays the same file).  numpy only:
the dashboard's store reads the test set without importing torch.
"""
import functools
import os
from pathlib import Path

import numpy as np

from common.file_digests import sha256_of

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# An IDX file is a header (magic number, item count, and for images rows and columns, each 4 bytes
# big-endian), then one record per item: 28 x 28 bytes per image, 1 byte per label.
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
IMAGES_HEADER, LABELS_HEADER = 16, 8
SIDE = 28
PIXELS = SIDE * SIDE
# `make data` in a clone; `mnistlab data` where the package is installed (both run training.nets.data).
FIX_HINT = "delete it and run `make data` (installed: `mnistlab data`) to fetch a fresh copy"


class MnistFileError(ValueError):
    """A missing, malformed or altered MNIST file; the message is one line naming it and the fix."""


def data_root() -> Path:
    return Path(os.environ.get("MNIST_ROOT", "data"))


def raw_dir(root) -> Path:
    return Path(root) / "MNIST" / "raw"


def check_header(path: Path) -> int:
    """Check an IDX file's magic number and that its size matches its header; return its item count."""
    is_images = "images" in path.name
    expected_magic = IMAGES_MAGIC if is_images else LABELS_MAGIC
    header_len = IMAGES_HEADER if is_images else LABELS_HEADER
    size = path.stat().st_size
    if size < header_len:
        raise MnistFileError(f"{path}: truncated ({size} bytes, shorter than the IDX header); {FIX_HINT}")
    with open(path, "rb") as f:
        header = f.read(header_len)
    magic = int.from_bytes(header[0:4], "big")
    if magic != expected_magic:
        raise MnistFileError(f"{path}: wrong magic number {magic} (expected {expected_magic}); {FIX_HINT}")
    count = int.from_bytes(header[4:8], "big")
    item = 1
    if is_images:
        rows, cols = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
        if (rows, cols) != (SIDE, SIDE):
            raise MnistFileError(f"{path}: images are {rows}x{cols}, expected {SIDE}x{SIDE}; {FIX_HINT}")
        item = PIXELS
    expected_size = header_len + count * item
    if size != expected_size:
        what = "truncated" if size < expected_size else "longer than its header says"
        raise MnistFileError(f"{path}: {what} ({size} bytes, header says {count} items = {expected_size} bytes); "
                             f"{FIX_HINT}")
    return count


def verify(root, checksums: dict[str, str] = SHA256) -> dict[str, str]:
    """Check every file of `checksums` is present, well-formed and has its sha256; MnistFileError names the first
    bad one.  Returns the checksums verified."""
    raw = raw_dir(root)
    counts = {}
    for name, expected in checksums.items():
        path = raw / name
        if not path.is_file():
            raise MnistFileError(f"{path}: missing; run `make data` (installed: `mnistlab data`) to fetch MNIST, "
                                 f"or set MNIST_ROOT to the folder holding MNIST/raw/")
        counts[name] = check_header(path)
        actual = sha256_of(path)
        if actual != expected:
            raise MnistFileError(f"{path}: sha256 mismatch (got {actual[:12]}..., expected {expected[:12]}...), "
                                 f"the file is corrupt or altered; {FIX_HINT}")
    for split in ("train", "t10k"):
        n_img, n_lab = counts.get(f"{split}-images-idx3-ubyte"), counts.get(f"{split}-labels-idx1-ubyte")
        if n_img is not None and n_lab is not None and n_img != n_lab:
            raise MnistFileError(f"{raw / f'{split}-labels-idx1-ubyte'}: {n_lab} labels for {n_img} images; {FIX_HINT}")
    return dict(checksums)


def read_split(root, train: bool, count: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` records (all: -1) of one split's files as torchvision reads them: uint8 images
    (N, 28, 28) and int64 labels.  Reads only; verify first."""
    prefix = "train" if train else "t10k"
    raw = raw_dir(root)
    images = np.fromfile(raw / f"{prefix}-images-idx3-ubyte", dtype=np.uint8, offset=IMAGES_HEADER,
                         count=count * PIXELS if count >= 0 else -1)
    labels = np.fromfile(raw / f"{prefix}-labels-idx1-ubyte", dtype=np.uint8, offset=LABELS_HEADER, count=count)
    return images.reshape(-1, SIDE, SIDE), labels.astype(np.int64)


def load_test_split(root=None, checksums: dict[str, str] = SHA256) -> tuple[np.ndarray, np.ndarray]:
    """The test split, its two files verified first (nobody who wants it needs the training set): uint8
    images (10000, 28, 28) and int64 labels, read afresh."""
    root = Path(root or data_root())
    verify(root, {name: digest for name, digest in checksums.items() if name in TEST_FILES})
    return read_split(root, train=False)


def test_set(root=None) -> tuple[np.ndarray, np.ndarray]:
    """The verified test split, read once per process and data folder and shared by every caller: uint8
    images (10000, 28, 28) and int64 labels in the order predictions are logged.  Read-only arrays, so
    that no caller can change what the next one sees."""
    return _cached_test_set(str(Path(root or data_root()).resolve()))


@functools.lru_cache(maxsize=4)
def _cached_test_set(root: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_test_split(root)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
