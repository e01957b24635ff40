"""How similar two layers' representations are: linear centred kernel alignment (no Dash, no store).

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", eq. 5):
for activations X (n, p1) and Y (n, p2) of the same n inputs, each column centred,

    CKA(X, Y) = ||Yᵀ X||²_F / (||Xᵀ X||_F · ||Yᵀ Y||_F)

It is 1 for identical representations, invariant to orthogonal transforms and isotropic scaling of
either side (not to arbitrary invertible ones), and compares layers of different widths.  Computed in
the feature space (p × p Gram matrices), so 10,000 images cost three small products.
"""
import numpy as np


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between (n, p1) and (n, p2) activations of the same n inputs; 0 when either is constant."""
    x, y = _centred(x), _centred(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs on both sides: {x.shape[0]} rows against {y.shape[0]}")
    cross = np.linalg.norm(y.T @ x) ** 2
    norms = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norms) if norms > 0 else 0.0


def cka_matrix(layers: list[np.ndarray]) -> np.ndarray:
    """(k, k) linear CKA between every pair of k representations of the same inputs (symmetric, diagonal 1)."""
    centred = [_centred(a) for a in layers]
    grams = [np.linalg.norm(c.T @ c) for c in centred]
    k = len(centred)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            denom = grams[i] * grams[j]
            value = np.linalg.norm(centred[j].T @ centred[i]) ** 2 / denom if denom > 0 else 0.0
            out[i, j] = out[j, i] = value
        if grams[i] == 0:
            out[i, i] = 0.0  # a constant layer is like nothing, itself included
    return out
