"""A unit in words: its verdict as a sentence, and its one-page HTML report (images inline, no scripts).

Pure functions of a target and its layer's statistics (no store, no Dash): the unit page and the
tests both call them.
"""
import html as html_text
from datetime import datetime, timezone

import numpy as np

from common import neurons as N
from dashboard.loaders.neuron_target import Target
from dashboard.views.neurons.neuron_images import (NEUTRAL, POSITIVE, heatmap_scale, heatmap_uri, ink, png_uri, top_mean_uri,
                                           verdict_color)

BIG_SCALE, TOP_SCALE = 8, 3  # report images: each pixel a block this wide


def summary_sentence(t: Target, stats: N.LayerStats, unit: int, labels: np.ndarray) -> str:
    """SI, NMI and the verdict in words a student can follow."""
    verdict = stats.verdicts[unit]
    a = stats.acts[:, unit]
    if stats.dead[unit]:
        return (f"Unit {unit} is dead at epoch {t.epoch}: its activation stays at {a.mean():.3f} on every test image "
                f"(it varies by less than {N.DEAD_RANGE:g}), so it tells the network nothing.")
    k = stats.top.shape[1]
    pref = int(stats.preferred[unit])
    rest = float(np.delete(stats.means[unit], pref).mean())
    top_labels = labels[stats.top[unit]]
    n_pref = int((top_labels == pref).sum())
    floor = N.activation_floor(t.activation)
    floor_note = f"; means measured from {t.activation}'s floor, {floor:g}" if floor else ""
    head = (f"Unit {unit} responds most to {pref}s (mean activation {stats.means[unit, pref]:.3f}, against "
            f"{rest:.3f} for the other digits): selectivity index SI = {stats.si[unit]:.2f} "
            f"(0 = no preference, 1 = only {pref}s{floor_note}), and its activation shares NMI = {stats.nmi[unit]:.2f} "
            f"of the label's information. {n_pref} of its top {k} images are {pref}s. ")
    if verdict.startswith("class"):
        return head + f"Verdict: {verdict}: a detector for the digit {pref}."
    counts = dict(zip(*np.unique(top_labels, return_counts=True)))
    mix = f" (top {k}: " + ", ".join(f"{c}× digit {d}" for d, c in counts.items()) + ")" if len(counts) > 1 else ""
    why = (f"SI is below {N.SI_THRESHOLD}: other digits excite it too" if stats.si[unit] < N.SI_THRESHOLD
           else f"fewer than {N.TOPK_MAJORITY:.0%} of its top {k} images are {pref}s")
    return head + (f"Verdict: feature-selective ({why}). It likely detects a stroke or shape that several "
                   f"digits share{mix}.")


def svg_bars(values: np.ndarray, highlight: int, width: int = 360, height: int = 150) -> str:
    """A unit's mean activation per digit as an inline SVG bar chart, the preferred digit highlighted."""
    lo = min(0.0, float(np.nanmin(values)))
    hi = max(float(np.nanmax(values)), lo + 1e-9)
    bw = width / len(values)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 36}" '
             f'role="img" aria-label="mean activation per digit">']
    for d, v in enumerate(values):
        top = height * (1 - (v - lo) / (hi - lo))
        base = height * (1 - (0 - lo) / (hi - lo))
        y, h = min(top, base), abs(base - top)
        color = POSITIVE if d == highlight else NEUTRAL
        parts.append(f'<rect x="{d * bw + 3:.1f}" y="{y:.1f}" width="{bw - 6:.1f}" height="{max(h, 0.5):.1f}" '
                     f'fill="{color}"><title>digit {d}: {v:.3f}</title></rect>')
        parts.append(f'<text x="{d * bw + bw / 2:.1f}" y="{height + 14}" text-anchor="middle" '
                     f'font-size="11">{d}</text>')
    parts.append(f'<text x="{width / 2}" y="{height + 32}" text-anchor="middle" font-size="11">digit '
                 f'(bar: mean activation, {lo:.2f} to {hi:.2f})</text></svg>')
    return "".join(parts)


def _heatmap_figure(t: Target, w: np.ndarray, unit: int) -> str:
    """The first layer's weights as a big inline image with its caption; deeper layers have none."""
    if not t.first:
        return ""
    vmax = heatmap_scale(w)
    heat = heatmap_uri(t, w, unit, vmax, scale=BIG_SCALE)
    caption = ("3×3 kernel" if t.kind == "conv" else "incoming weights") + f", blue + / red −, scale ±{vmax:.3g}"
    return f'<figure><img src="{heat}" alt="weights" class=big><figcaption>{html_text.escape(caption)}' \
           f'</figcaption></figure>'


def _top_images(stats: N.LayerStats, unit: int, images: np.ndarray, labels: np.ndarray) -> str:
    return "".join(
        f'<figure><img src="{png_uri(ink(images[i]), scale=TOP_SCALE)}" alt="test image {i}">'
        f'<figcaption><b>{labels[i]}</b> · {stats.acts[i, unit]:.3f}</figcaption></figure>'
        for i in stats.top[unit])


def report_html(t: Target, unit: int, stats: N.LayerStats, w: np.ndarray, images: np.ndarray, labels: np.ndarray,
                label: dict, stamp: datetime | None = None) -> str:
    """A self-contained one-page HTML report of the unit (images inline, no scripts), like write-up E's.

    `w` is the layer's weights at t.epoch, `label` the unit's {"name", "note"} (either may be missing).
    """
    esc = html_text.escape
    verdict, k = stats.verdicts[unit], stats.top.shape[1]
    name = f"“{esc(label['name'])}”" if label.get("name") else ""
    note = f"<p class=note>{esc(label['note'])}</p>" if label.get("note") else ""
    stamp = (stamp or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unit {unit}, layer {t.layer} · {esc(t.run_name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:24px auto;color:#1d2330}}
figure{{display:inline-block;margin:4px;text-align:center;font-size:12px}}
img{{image-rendering:pixelated;border:1px solid #dde1e8}} img.big{{width:224px}}
.verdict{{font-weight:700;color:{verdict_color(verdict)}}} .muted{{color:#5d6677;font-size:12px}}
.note{{white-space:pre-wrap;background:#f6f7f9;padding:8px}}</style></head><body>
<h1>Unit {unit} of layer {t.layer} ({esc(t.layer_name)}) {name}</h1>
<p class=muted>Run {esc(t.run_name)} ({t.run_id}) · epoch {t.epoch} · {stamp}</p>
{note}<p class=verdict>{esc(verdict)} · SI {stats.si[unit]:.2f} · NMI {stats.nmi[unit]:.2f}</p>
<p>{esc(summary_sentence(t, stats, unit, labels))}</p>
{_heatmap_figure(t, w, unit)}<figure><img src="{top_mean_uri(stats, unit, scale=BIG_SCALE)}" alt="top mean" class=big>
<figcaption>mean of its top {k} images</figcaption></figure>
<figure>{svg_bars(stats.means[unit], int(stats.preferred[unit]))}</figure>
<h2>Top {k} test images (digit · activation)</h2>{_top_images(stats, unit, images, labels)}
<p class=muted>SI = (μmax − μrest)/(μmax + μrest) over class-mean activations (Morcos et al. 2018);
class-selective when SI ≥ {N.SI_THRESHOLD} and ≥ {N.TOPK_MAJORITY:.0%} of the top {k} are one digit.</p>
</body></html>"""
