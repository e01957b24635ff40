"""Write tiny MNIST-format IDX files for tests."""
import hashlib
from pathlib import Path

import numpy as np

NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + rows.to_bytes(4, "big") + cols.to_bytes(4, "big")
    return header + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


def write_tiny_mnist(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict[str, str]:
    """Write a tiny data set in torchvision's layout under root; return its sha256 sums."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img_name, lab_name = NAMES[split]
        for name, blob in ((img_name, idx_images(rng.integers(0, 256, (n, 28, 28)))),
                           (lab_name, idx_labels(rng.integers(0, 10, n)))):
            (raw / name).write_bytes(blob)
            sums[name] = hashlib.sha256(blob).hexdigest()
    return sums
