"""What a layer knows: a 2-D map of the test images' activations in one layer (no Dash, no store).

PCA (scikit-learn) by default: deterministic, a second on 2 cores, and its axes mean something (the
two directions of largest variance).  UMAP (McInnes et al. 2018) only when `umap-learn` is installed:
it separates the digits more, but is slower and its distances are not to scale.
"""
import importlib.util

import numpy as np

METHODS = ("pca", "umap")
SEED = 0


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def embed(acts: np.ndarray, method: str = "pca") -> tuple[np.ndarray, str]:
    """(N, 2) float32 coordinates of the N rows of `acts` and a line saying how they were made."""
    acts = np.asarray(acts, dtype=np.float64)
    if acts.shape[1] < 2 or np.ptp(acts, axis=0).max(initial=0.0) == 0:
        return np.zeros((len(acts), 2), np.float32), "the layer's activations do not vary: every image at one point"
    if method == "umap" and umap_available():
        import umap  # optional: imported only when asked for and installed
        xy = umap.UMAP(n_components=2, random_state=SEED).fit_transform(acts)
        return xy.astype(np.float32), "UMAP (umap-learn, 15 neighbours, seed 0)"
    from sklearn.decomposition import PCA  # here: scikit-learn costs every dashboard worker a second to import
    pca = PCA(n_components=2, svd_solver="full", random_state=SEED).fit(acts)
    xy = pca.transform(acts)
    share = pca.explained_variance_ratio_
    return xy.astype(np.float32), (f"PCA: the two directions of largest variance, {share[0]:.0%} and {share[1]:.0%} "
                                   f"of the layer's variance")
