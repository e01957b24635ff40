"""Units as small pictures: PNG tiles drawn with numpy and encoded by Pillow, and the neuron pages' colours.

A layer of 32 tiles costs 32 small PNGs, not 32 figures.  Pure functions of arrays: no store.
"""
import base64
import io

import numpy as np
from PIL import Image

from common import neurons as N
from dashboard.loaders.neuron_target import Target

VERDICT_COLORS = {"class": "#0072B2", "feature": "#009E73", "dead": "#7F7F7F"}
POSITIVE, NEGATIVE, NEUTRAL = "#2166ac", "#b2182b", "#9aa4b5"  # blue +, red -, grey
DEAD_GREY = 235  # a dead unit's top-mean tile: its "top" images are just ties, so show none

# ColorBrewer RdBu, low to high: red negative, white zero, blue positive (write-up C's convention).
RDBU = np.array([(103, 0, 31), (178, 24, 43), (214, 96, 77), (244, 165, 130), (253, 219, 199), (247, 247, 247),
                 (209, 229, 240), (146, 197, 222), (67, 147, 195), (33, 102, 172), (5, 48, 97)], dtype=np.float64)


def verdict_color(verdict: str) -> str:
    return VERDICT_COLORS[verdict.split("-")[0].split(" ")[0]]


def diverging_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 in RdBu centred on 0, saturating at +-vmax."""
    t = (np.clip(np.asarray(values, dtype=np.float64) / vmax, -1, 1) + 1) / 2 * (len(RDBU) - 1)
    i = np.clip(np.floor(t).astype(int), 0, len(RDBU) - 2)
    f = (t - i)[..., None]
    return np.round(RDBU[i] * (1 - f) + RDBU[i + 1] * f).astype(np.uint8)


def ink(image: np.ndarray) -> np.ndarray:
    """A (28, 28) MNIST image (white on black, 0-255) as dark ink on white paper, uint8."""
    return (255 - np.clip(np.asarray(image, dtype=np.float64), 0, 255)).round().astype(np.uint8)


def png_bytes(pixels: np.ndarray, scale: int = 1) -> bytes:
    """Encode (H, W) grey or (H, W, 3) RGB uint8 as PNG, each pixel a scale x scale block."""
    p = np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8).repeat(scale, 0).repeat(scale, 1))
    buf = io.BytesIO()
    Image.fromarray(p).save(buf, "PNG")
    return buf.getvalue()


def png_uri(pixels: np.ndarray, scale: int = 1) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels, scale)).decode("ascii")


def top_mean_uri(stats: N.LayerStats, unit: int, scale: int = 1) -> str:
    """The mean of a unit's top images as a PNG; plain grey for a dead unit, whose "top" images are just ties."""
    pixels = np.full((28, 28), DEAD_GREY, np.uint8) if stats.dead[unit] else ink(stats.top_mean[unit])
    return png_uri(pixels, scale)


def heatmap_scale(w: np.ndarray) -> float:
    """One symmetric colour scale for a layer's heatmaps at an epoch: its largest |weight|.

    Per epoch, not fixed over training: PyTorch's initial weights are ~100x smaller than trained
    ones, so a fixed scale would show epoch 0 blank.  The scale is printed beside the heatmaps.
    """
    vmax = float(np.abs(w).max(initial=0.0))
    return vmax if vmax > 0 else 1.0


def unit_heatmap(t: Target, w: np.ndarray, unit: int) -> np.ndarray:
    """A first-layer unit's incoming weights as an image: 28x28 (MLP) or its 3x3 kernel (conv)."""
    return w[unit, 0] if t.kind == "conv" else w[unit].reshape(28, 28)


def heatmap_uri(t: Target, w: np.ndarray, unit: int, vmax: float, scale: int = 1) -> str:
    """A first-layer unit's weights as an RdBu PNG on the layer's one scale, vmax (see heatmap_scale)."""
    return png_uri(diverging_rgb(unit_heatmap(t, w, unit), vmax), scale)


def tile_uris(t: Target, stats: N.LayerStats, w: np.ndarray) -> tuple[list[str], str]:
    """One PNG per unit of the layer (first layer: its weights; deeper: its top-mean image) and a line
    saying what the tiles show."""
    if t.first:
        vmax = heatmap_scale(w)
        uris = [heatmap_uri(t, w, u, vmax) for u in range(t.units)]
        what = "3×3 kernel" if t.kind == "conv" else "incoming weights (28×28)"
        return uris, f"Each tile: the unit's {what}; blue positive, red negative, white 0, one scale for all " \
                     f"tiles (±{vmax:.3g}: the layer's largest weight at epoch {t.epoch})."
    uris = [top_mean_uri(stats, u) for u in range(t.units)]
    return uris, f"Each tile: the mean of the unit's top {stats.top.shape[1]} test images (dark = ink; " \
                  "plain grey: a dead unit)."


def sort_units(stats: N.LayerStats, how: str, drop: np.ndarray | None = None) -> list[int]:
    """Unit indices in the layer view's order: by index, by SI (highest first), dead units first, or by the
    accuracy lost when each alone is switched off (`drop`, largest first; index order without it)."""
    units = list(range(stats.units))
    if how == "ablation" and drop is not None:
        return sorted(units, key=lambda u: (-drop[u], u))
    if how == "si":
        return sorted(units, key=lambda u: (-stats.si[u], u))
    if how == "dead":
        return sorted(units, key=lambda u: (not stats.dead[u], u))
    return units
