"""What changed image by image between run A and run B at one epoch: fixed and broken images, and the
confusion-matrix difference B - A (no Dash, no MLflow)."""
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix

N_CLASSES = 10
GALLERY = 24  # images per gallery: the most confident changes first


@dataclass(frozen=True)
class ImageDiff:
    fixed: np.ndarray  # indices of test images A gets wrong and B right, B's most confident first
    broken: np.ndarray  # A right, B wrong, B's most confident (wrong) first
    confusion_delta: np.ndarray  # (10, 10) int: rows true digit, columns predicted; B's count minus A's


def _by_confidence(index: np.ndarray, conf: np.ndarray) -> np.ndarray:
    return index[np.argsort(-conf[index], kind="stable")]


def image_diff(labels, pred_a, pred_b, conf_b) -> ImageDiff:
    labels, pred_a, pred_b = (np.asarray(x, dtype=np.int64) for x in (labels, pred_a, pred_b))
    right_a, right_b = pred_a == labels, pred_b == labels
    conf_b = np.asarray(conf_b, dtype=float)
    classes = list(range(N_CLASSES))
    delta = (confusion_matrix(labels, pred_b, labels=classes).astype(np.int64)
             - confusion_matrix(labels, pred_a, labels=classes).astype(np.int64))
    return ImageDiff(_by_confidence(np.flatnonzero(~right_a & right_b), conf_b),
                     _by_confidence(np.flatnonzero(right_a & ~right_b), conf_b), delta)
