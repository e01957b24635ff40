"""Glue between the store and the neuron analytics, for the layer and unit pages.

A run's hidden activations at one snapshot epoch are recomputed from that
snapshot's weights (training.models, the same forward pass the run trained
with) over the 10,000 test images, once per run and epoch, and every layer's
statistics once per run, layer and epoch.  A logged snapshot never changes,
so the caches never go stale.  Also here: the PNG tiles the pages show, drawn
with numpy so a layer of 32 tiles costs no figures; a unit's verdict in words; and
its one-page HTML report (no Dash: the pages and the tests both call these).

Layers are numbered from 1 (the first hidden layer), as in the URL and in the
neuron name tags.  Every problem with what the user asked for raises
StoreError with a one-line message the page shows.
"""
import base64
import functools
import html as html_text
import re
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

import numpy as np
import torch
import torch.nn.functional as F

from dashboard import store
from dashboard.analytics import neurons as N
from dashboard.store import StoreError
from training import contract as C
from training.config import ConfigError, RunConfig
from training.models import ACTIVATION_FNS, StackedNet, layers_of

INTEGER_RE = re.compile(r"-?[0-9]{1,9}")
FORWARD_CHUNK = 2000  # images per forward pass: bounds memory for conv feature maps (2000 x 16 x 26 x 26)


# ---- addresses ---------------------------------------------------------------------------------

def layer_href(run_id: str, layer: int, epoch: int | None = None) -> str:
    query = {"layer": layer} | ({"epoch": epoch} if epoch is not None else {})
    return f"/runs/{run_id}/neurons?{urlencode(query)}"


def unit_href(run_id: str, layer: int, unit: int, epoch: int | None = None) -> str:
    return f"/runs/{run_id}/neurons/{layer}/{unit}" + (f"?epoch={epoch}" if epoch is not None else "")


VERDICT_COLORS = {"class": "#0072B2", "feature": "#009E73", "dead": "#7F7F7F"}
POSITIVE, NEGATIVE, NEUTRAL = "#2166ac", "#b2182b", "#9aa4b5"  # blue +, red -, grey


def verdict_color(verdict: str) -> str:
    return VERDICT_COLORS[verdict.split("-")[0].split(" ")[0]]


# ---- what the user asked for -------------------------------------------------------------------

def parse_int(value, what: str) -> int:
    """An integer from a URL part or query value, or StoreError naming what was wrong."""
    text = str(value).strip()
    if not INTEGER_RE.fullmatch(text):  # ASCII only: str.isdigit() accepts '²', which int() rejects
        raise StoreError(f"{what} '{text[:20]}' is not a whole number")
    return int(text)


def run_config(run) -> RunConfig:
    """The model config a run trained with, from its params; StoreError for runs our trainer did not log."""
    params = run.data.params
    if any(k not in params for k in ("arch", "sizes", "activation", "loss")):
        raise StoreError(f"run {run.info.run_id} was not logged by MNIST Lab's trainer: it has no model params, "
                         "so it has no neurons to show")
    # The arch param holds the architecture's name (mlp-784-20-10-sigmoid, cnn-relu); the CNN's sizes is "cnn".
    values = {"activation": params["activation"], "loss": params["loss"]}
    if params["arch"].startswith("cnn") or params["sizes"] == "cnn":
        values["arch"] = "cnn"
    else:
        values.update(arch="mlp", sizes=params["sizes"])
    try:
        return RunConfig.from_dict(values, where=f"run {run.info.run_id[:8]} params")
    except ConfigError as e:
        raise StoreError(str(e)) from None


def hidden_layers(run) -> list[str]:
    return store.layer_names(run)[:-1]


@dataclass(frozen=True)
class Target:
    """A validated (run, layer, epoch) and what the pages need to know about it."""
    run_id: str
    run_name: str
    layer: int  # 1-based hidden layer
    layer_name: str
    kind: str  # "linear" or "conv"
    units: int
    epoch: int
    epochs: tuple
    activation: str
    first: bool  # the first hidden layer: its weights are image-shaped
    prev_name: str | None  # previous hidden layer's name (None for the first)
    unit: int | None = None  # the unit asked for, if any


def resolve(run_id, layer=1, epoch=None, unit=None) -> Target:
    """Check a run id, 1-based layer, epoch (default: the last snapshot) and unit; StoreError if any is wrong."""
    run = store.get_run(str(run_id))
    config = run_config(run)
    hidden = hidden_layers(run)
    if not hidden:
        raise StoreError(f"run {run_id} has no hidden layers logged")
    layer = 1 if layer in (None, "") else parse_int(layer, "layer")
    if not 1 <= layer <= len(hidden):
        raise StoreError(f"layer {layer} does not exist: this run's hidden layers are 1–{len(hidden)} "
                         f"({', '.join(hidden)})")
    epochs = tuple(store.snapshot_epochs(run_id))
    if not epochs:
        raise StoreError(f"run {run_id} logged no weight snapshots, so its neurons cannot be shown")
    epoch = epochs[-1] if epoch in (None, "") else parse_int(epoch, "epoch")
    if epoch not in epochs:
        raise StoreError(f"epoch {epoch} has no snapshot: this run has snapshots for epochs "
                         f"{_epoch_list(epochs)}")
    spec = {l.name: l for l in layers_of(config)}[hidden[layer - 1]]
    u = None
    if unit not in (None, ""):
        u = parse_int(unit, "unit")
        if not 0 <= u < spec.units:
            raise StoreError(f"unit {u} does not exist: layer {layer} ({spec.name}) has units 0–{spec.units - 1}")
    return Target(run_id=run_id, run_name=run.info.run_name or run_id[:8], layer=layer, layer_name=spec.name,
                  kind=spec.kind, units=spec.units, epoch=epoch, epochs=epochs, activation=config.activation,
                  first=layer == 1, prev_name=hidden[layer - 2] if layer > 1 else None, unit=u)


def _epoch_list(epochs) -> str:
    if list(epochs) == list(range(epochs[0], epochs[-1] + 1)) and len(epochs) > 2:
        return f"{epochs[0]}–{epochs[-1]}"
    return ", ".join(map(str, epochs))


# ---- activations and statistics (cached) ---------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _test_inputs() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    images, labels = store.test_set()
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, images, np.asarray(labels, dtype=np.int64)


def test_images() -> tuple[np.ndarray, np.ndarray]:
    """(10000, 28, 28) uint8 test images and their labels."""
    _, images, labels = _test_inputs()
    return images, labels


@dataclass(frozen=True)
class Activations:
    """One hidden layer's per-unit activations over the test set, and what orders their ties."""
    acts: np.ndarray  # (N, units) float32; conv: the spatial max of each channel's feature map
    pre: np.ndarray | None  # (N, units) pre-activations for linear layers; None for conv


def _snapshot_params(config: RunConfig, snapshot: dict) -> dict[str, torch.Tensor]:
    params = {}
    for layer in layers_of(config):
        params[f"{layer.name}.weight"] = torch.from_numpy(np.asarray(snapshot[C.weight_key(layer.name)]))
        params[f"{layer.name}.bias"] = torch.from_numpy(np.asarray(snapshot[C.bias_key(layer.name)]))
    return params


def compute_activations(config: RunConfig, snapshot: dict, x: torch.Tensor,
                        upto: int | None = None) -> list[Activations]:
    """Hidden layers 1..upto (default: all) for inputs x (N, 784), with training's own forward pass.

    A CNN's first layer alone is one convolution; its second costs five times more, so `upto=1`
    skips it.  MLP layers are cheap and always come together.
    """
    params = _snapshot_params(config, snapshot)
    layers = layers_of(config)
    if config.arch == "cnn" and upto == 1:
        act = ACTIVATION_FNS[config.activation]
        w, b = params["conv1.weight"], params["conv1.bias"]
        with torch.no_grad():
            acts = [act(F.conv2d(x[i:i + FORWARD_CHUNK].reshape(-1, 1, 28, 28), w, b)).amax(dim=(-2, -1))
                    for i in range(0, len(x), FORWARD_CHUNK)]
        return [Activations(torch.cat(acts).numpy(), None)]
    net = StackedNet(config, [params])
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), FORWARD_CHUNK):
            xb = x[i:i + FORWARD_CHUNK]
            _, hidden = net.forward(xb.unsqueeze(0), keep_hidden=True)
            parts, prev = [], xb
            for layer, h in zip(layers, hidden):
                h = h[0]
                if h.dim() == 4:
                    parts.append((h.amax(dim=(-2, -1)), None))
                else:
                    pre = torch.addmm(params[f"{layer.name}.bias"], prev, params[f"{layer.name}.weight"].t())
                    parts.append((h, pre))
                    prev = h
            chunks.append(parts)
    out = []
    for layer_parts in zip(*chunks):
        acts = torch.cat([a for a, _ in layer_parts]).numpy()
        pre = None if layer_parts[0][1] is None else torch.cat([p for _, p in layer_parts]).numpy()
        out.append(Activations(acts, pre))
    return out[:upto]


@functools.lru_cache(maxsize=32)
def _activations(run_id: str, epoch: int, upto: int | None) -> tuple[Activations, ...]:
    config = run_config(store.get_run(run_id))
    x, _, _ = _test_inputs()
    return tuple(compute_activations(config, store.load_snapshot(run_id, epoch), x, upto))


def layer_activations(run_id: str, epoch: int, layer: int, arch_is_cnn: bool = False) -> Activations:
    """A hidden layer's activations for a validated run, snapshot epoch and 1-based layer (cached)."""
    if arch_is_cnn and layer == 1:
        return _activations(run_id, epoch, 1)[0]
    return _activations(run_id, epoch, None)[layer - 1]


@functools.lru_cache(maxsize=64)
def _layer_stats(run_id: str, layer: int, epoch: int, activation: str, cnn: bool) -> N.LayerStats:
    _, images, labels = _test_inputs()
    a = layer_activations(run_id, epoch, layer, cnn)
    return N.layer_stats(a.acts, labels, images, floor=N.activation_floor(activation), tiebreak=a.pre)


def layer_stats(t: Target) -> N.LayerStats:
    return _layer_stats(t.run_id, t.layer, t.epoch, t.activation, t.kind == "conv")


def weights(t: Target) -> np.ndarray:
    """The layer's weights at the target epoch, PyTorch layout: (units, in) or (units, in, kh, kw)."""
    return store.load_snapshot(t.run_id, t.epoch)[C.weight_key(t.layer_name)]


def heatmap_scale(t: Target) -> float:
    """One symmetric colour scale for a layer's heatmaps at an epoch: its largest |weight|.

    Per epoch, not fixed over training: PyTorch's initial weights are ~100x smaller than trained
    ones, so a fixed scale would show epoch 0 blank.  The scale is printed beside the heatmaps.
    """
    vmax = float(np.abs(weights(t)).max(initial=0.0))
    return vmax if vmax > 0 else 1.0


def unit_heatmap(t: Target, w: np.ndarray, unit: int) -> np.ndarray:
    """A first-layer unit's incoming weights as an image: 28x28 (MLP) or its 3x3 kernel (conv)."""
    return w[unit, 0] if t.kind == "conv" else w[unit].reshape(28, 28)


# ---- names, notes and other runs ---------------------------------------------------------------

def neuron_labels(run_id: str, layer: int) -> dict[int, dict]:
    """{unit: {"name": ..., "note": ...}} from the run's tags, read fresh (another person may just have named one)."""
    tags = store.get_run(run_id).data.tags
    out: dict[int, dict] = {}
    prefix = f"neuron.{layer}."
    for key, value in tags.items():
        if not key.startswith(prefix):
            continue
        unit, _, field = key[len(prefix):].partition(".")
        if unit.isdigit() and key in (C.neuron_name_tag(layer, int(unit)), C.neuron_note_tag(layer, int(unit))):
            out.setdefault(int(unit), {})[field] = value
    return out


def comparable_runs(t: Target) -> list[dict]:
    """Runs of the same experiment (a sweep) whose layers up to t.layer have the same names, so their
    units see the same input; the same architecture first.  Snapshots are checked when one is picked.
    """
    this = store.get_run(t.run_id)
    want = store.layer_names(this)[:t.layer]
    # Layer names come from our trainer (fc1, conv2); only such names go into the filter string.
    like = f"params.{C.PARAM_LAYERS} LIKE '{','.join(want)},%'" if all(n.isidentifier() for n in want) else ""
    arch = this.data.params.get(C.PARAM_ARCH)
    out = []
    for r in store.search_runs([this.info.experiment_id], like):
        layers = store.layer_names(r)
        if r.info.run_id == t.run_id or layers[:t.layer] != want or len(layers) <= t.layer:
            continue
        name = r.info.run_name or r.info.run_id[:8]
        label = f"{name} · {r.data.params.get(C.PARAM_ARCH, '?')} · {r.info.run_id[:8]}"
        out.append({"label": label, "value": r.info.run_id, "_key": r.data.params.get(C.PARAM_ARCH) != arch})
    out.sort(key=lambda d: d.pop("_key"))
    return out


@dataclass(frozen=True)
class Match:
    other: Target
    unit: int  # the other run's matching unit
    corr: float
    method: str


def best_match(t: Target, unit: int, other_run_id: str) -> Match:
    """The unit of another run (same layer, same epoch if it has it, else its last) most like `unit`."""
    epochs = store.snapshot_epochs(store.check_run_id(other_run_id))
    if not epochs:
        raise StoreError(f"run {other_run_id} logged no weight snapshots to match against")
    other = resolve(other_run_id, t.layer, t.epoch if t.epoch in epochs else epochs[-1])
    if other.layer_name != t.layer_name:
        raise StoreError(f"run {other_run_id[:8]}'s layer {t.layer} is {other.layer_name}, not {t.layer_name}")
    match, corr, method = _matching(t.run_id, other_run_id, t.layer, t.epoch, other.epoch, t.kind == "conv")
    return Match(other=other, unit=int(match[unit]), corr=float(corr[unit]), method=method)


@functools.lru_cache(maxsize=64)
def _matching(run_a: str, run_b: str, layer: int, epoch_a: int, epoch_b: int, cnn: bool):
    a = layer_activations(run_a, epoch_a, layer, cnn).acts
    b = layer_activations(run_b, epoch_b, layer, cnn).acts
    return N.match_units(a, b)


# ---- pictures ----------------------------------------------------------------------------------

# ColorBrewer RdBu, low to high: red negative, white zero, blue positive (write-up C's convention).
RDBU = np.array([(103, 0, 31), (178, 24, 43), (214, 96, 77), (244, 165, 130), (253, 219, 199), (247, 247, 247),
                 (209, 229, 240), (146, 197, 222), (67, 147, 195), (33, 102, 172), (5, 48, 97)], dtype=np.float64)


def diverging_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 in RdBu centred on 0, saturating at +-vmax."""
    t = (np.clip(np.asarray(values, dtype=np.float64) / vmax, -1, 1) + 1) / 2 * (len(RDBU) - 1)
    i = np.clip(np.floor(t).astype(int), 0, len(RDBU) - 2)
    f = (t - i)[..., None]
    return np.round(RDBU[i] * (1 - f) + RDBU[i + 1] * f).astype(np.uint8)


def ink(image: np.ndarray) -> np.ndarray:
    """A (28, 28) MNIST image (white on black, 0-255) as dark ink on white paper, uint8."""
    return (255 - np.clip(np.asarray(image, dtype=np.float64), 0, 255)).round().astype(np.uint8)


def top_mean_uri(stats: N.LayerStats, unit: int, scale: int = 1) -> str:
    """The mean of a unit's top images as a PNG; plain grey for a dead unit, whose "top" images are just ties."""
    pixels = np.full((28, 28), 235, np.uint8) if stats.dead[unit] else ink(stats.top_mean[unit])
    return png_uri(pixels, scale)


def png_bytes(pixels: np.ndarray, scale: int = 1) -> bytes:
    """Encode (H, W) grey or (H, W, 3) RGB uint8 as PNG, each pixel a scale x scale block."""
    p = np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8).repeat(scale, 0).repeat(scale, 1))
    h, w = p.shape[:2]
    colour = 2 if p.ndim == 3 else 0
    raw = b"".join(b"\x00" + p[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def png_uri(pixels: np.ndarray, scale: int = 1) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels, scale)).decode("ascii")


# ---- words and the report ----------------------------------------------------------------------

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


def _svg_bars(values: np.ndarray, highlight: int, width: int = 360, height: int = 150) -> str:
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


def report_html(t: Target, unit: int) -> str:
    """A self-contained one-page HTML report of the unit (images inline, no scripts), like write-up E's."""
    stats = layer_stats(t)
    images, labels = test_images()
    label = neuron_labels(t.run_id, t.layer).get(unit, {})
    esc = html_text.escape
    verdict, k = stats.verdicts[unit], stats.top.shape[1]
    w = weights(t)
    if t.first:
        vmax = heatmap_scale(t)
        heat = png_uri(diverging_rgb(unit_heatmap(t, w, unit), vmax), scale=8)
        heat_caption = ("3×3 kernel" if t.kind == "conv" else "incoming weights") + \
            f", blue + / red −, scale ±{vmax:.3g}"
    else:
        heat, heat_caption = None, ""
    tops = "".join(
        f'<figure><img src="{png_uri(ink(images[i]), scale=3)}" alt="test image {i}">'
        f'<figcaption><b>{labels[i]}</b> · {stats.acts[i, unit]:.3f}</figcaption></figure>'
        for i in stats.top[unit])
    name = f"“{esc(label['name'])}”" if label.get("name") else ""
    note = f"<p class=note>{esc(label['note'])}</p>" if label.get("note") else ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    heat_fig = (f'<figure><img src="{heat}" alt="weights" class=big><figcaption>{esc(heat_caption)}'
                f'</figcaption></figure>' if heat else "")
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
{heat_fig}<figure><img src="{top_mean_uri(stats, unit, scale=8)}" alt="top mean" class=big>
<figcaption>mean of its top {k} images</figcaption></figure>
<figure>{_svg_bars(stats.means[unit], int(stats.preferred[unit]))}</figure>
<h2>Top {k} test images (digit · activation)</h2>{tops}
<p class=muted>SI = (μmax − μrest)/(μmax + μrest) over class-mean activations (Morcos et al. 2018);
class-selective when SI ≥ {N.SI_THRESHOLD} and ≥ {N.TOPK_MAJORITY:.0%} of the top {k} are one digit.</p>
</body></html>"""