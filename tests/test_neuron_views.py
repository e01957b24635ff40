"""The neuron pages' pictures, figures and words, on synthetic layers whose answers are known (no store)."""
import base64
import io
import re
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from common import neurons as N
from dashboard.loaders.neuron_target import Target
from dashboard.views.neurons import neuron_figures as F
from dashboard.views.neurons import neuron_images as I
from dashboard.views.neurons.unit_report import report_html, summary_sentence

RNG = np.random.default_rng(1)
LABELS = np.repeat(np.arange(10), 50)
IMAGES = RNG.integers(0, 256, size=(len(LABELS), 28, 28)).astype(np.uint8)


def target(first=True, kind="linear", units=3, activation="sigmoid") -> Target:
    return Target(run_id="ab" * 16, run_name="synthetic <run>", experiment_id="0", finished=True, own_loop=False,
                  config=None, no_config="", specs=(), arch_label=None, labels=(), layer=1 if first else 2,
                  layer_name="fc1" if first else "fc2", kind=kind, units=units, epoch=4, epochs=(0, 2, 4),
                  activation=activation, first=first, prev_name=None if first else "fc1")


def layer(floor=0.0) -> N.LayerStats:
    """Unit 0 fires for 3s only, unit 1 never varies, unit 2 is noise."""
    units = [np.where(LABELS == 3, 0.9, 0.0) + RNG.uniform(0, 0.01, len(LABELS)), np.full(len(LABELS), 0.25),
             RNG.uniform(0, 1, len(LABELS))]
    return N.layer_stats(np.stack(units, 1), LABELS, IMAGES, floor=floor)


def decode(uri_or_bytes) -> np.ndarray:
    data = uri_or_bytes
    if isinstance(data, str):
        data = base64.b64decode(data.split("data:image/png;base64,", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)))


def test_diverging_colours_are_rdbu_red_negative_white_zero_blue_positive():
    rgb = I.diverging_rgb(np.array([[-1.0, 0.0, 1.0, 5.0]]), 1.0)
    assert rgb[0, 0].tolist() == [103, 0, 31] and rgb[0, 1].tolist() == [247, 247, 247]
    assert rgb[0, 2].tolist() == [5, 48, 97] and rgb[0, 3].tolist() == [5, 48, 97]  # saturates at vmax


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 3)])
def test_a_png_decodes_to_exactly_the_pixels_each_scaled_to_a_block(shape):
    pixels = RNG.integers(0, 256, size=shape).astype(np.uint8)
    png = I.png_bytes(pixels, scale=2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (8, 6)
    np.testing.assert_array_equal(decode(png), pixels.repeat(2, 0).repeat(2, 1))
    np.testing.assert_array_equal(decode(I.png_uri(pixels)), pixels)


def test_ink_turns_white_on_black_digits_into_dark_on_white():
    np.testing.assert_array_equal(I.ink(np.array([[0, 255, 100]])), [[255, 0, 155]])


def test_first_layer_tiles_are_each_units_weights_on_the_layers_one_scale():
    t = target()
    w = RNG.normal(size=(3, 784)).astype(np.float32)
    uris, legend = I.tile_uris(t, layer(), w)
    vmax = float(np.abs(w).max())
    assert len(uris) == 3 and f"±{vmax:.3g}" in legend
    for u, uri in enumerate(uris):
        np.testing.assert_array_equal(decode(uri), I.diverging_rgb(w[u].reshape(28, 28), vmax))


def test_deeper_tiles_are_the_mean_of_the_top_images_and_plain_grey_for_a_dead_unit():
    stats = layer()
    uris, legend = I.tile_uris(target(first=False), stats, RNG.normal(size=(3, 20)))
    assert f"top {N.DEFAULT_K} test images" in legend
    np.testing.assert_array_equal(decode(uris[0]), I.ink(IMAGES[stats.top[0]].astype(np.float32).mean(0)))
    assert (decode(uris[1]) == I.DEAD_GREY).all()


def test_tiles_sort_by_index_by_si_or_dead_first():
    stats = layer()
    assert I.sort_units(stats, "index") == [0, 1, 2]
    assert I.sort_units(stats, "si") == sorted(range(3), key=lambda u: -stats.si[u])
    assert I.sort_units(stats, "dead") == [1, 0, 2]


def test_verdict_colours_follow_the_verdicts_kind():
    assert I.verdict_color("class-selective (digit 3)") == I.VERDICT_COLORS["class"]
    assert I.verdict_color("feature-selective") == I.VERDICT_COLORS["feature"]
    assert I.verdict_color("dead") == I.VERDICT_COLORS["dead"]


def test_weights_figures_show_the_units_own_weights():
    w = RNG.normal(size=(3, 784))
    fig = F.weights_figure(target(), w, 2)
    vmax = float(np.abs(w).max())
    np.testing.assert_array_equal(fig.data[0].z, w[2].reshape(28, 28))
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-vmax, vmax)
    conv = RNG.normal(size=(16, 1, 3, 3))
    np.testing.assert_array_equal(F.weights_figure(target(kind="conv", units=16), conv, 5).data[0].z, conv[5, 0])
    row = RNG.normal(size=(3, 20))
    bars = F.weights_figure(target(first=False), row, 1).data[0]
    np.testing.assert_array_equal(bars.y, row[1])
    assert list(bars.marker.color) == [I.POSITIVE if v >= 0 else I.NEGATIVE for v in row[1]]


def test_distribution_figures_hold_the_units_numbers():
    stats = layer()
    hist = F.histogram_figure(stats, 2).data[0]
    assert sum(hist.y) == len(LABELS)
    boxes = F.per_class_figure(stats, 0, LABELS).data
    for d, box in enumerate(boxes):
        expected = np.percentile(stats.acts[LABELS == d, 0], [0, 25, 50, 75, 100])
        np.testing.assert_allclose([box.lowerfence[0], box.q1[0], box.median[0], box.q3[0], box.upperfence[0]],
                                   expected)
    means = F.class_means_figure(stats, 0)
    np.testing.assert_allclose(means.data[0].y, stats.means[0])
    assert means.layout.shapes[0].y0 == pytest.approx(np.delete(stats.means[0], 3).mean())


def test_the_summary_names_the_preferred_digit_si_nmi_and_the_verdict():
    stats = layer()
    text = summary_sentence(target(), stats, 0, LABELS)
    assert text.startswith("Unit 0 responds most to 3s") and f"SI = {stats.si[0]:.2f}" in text
    assert f"NMI = {stats.nmi[0]:.2f}" in text and text.endswith("Verdict: class-selective (digit 3): a detector "
                                                                  "for the digit 3.")
    assert summary_sentence(target(), stats, 1, LABELS).startswith("Unit 1 is dead at epoch 4")
    tanh = summary_sentence(target(activation="tanh"), layer(floor=-1.0), 2, LABELS)
    assert "means measured from tanh's floor, -1" in tanh and "Verdict: feature-selective" in tanh


def test_the_report_inlines_every_image_escapes_the_names_and_runs_nothing():
    stats, w = layer(), RNG.normal(size=(3, 784))
    stamp = datetime(2024, 5, 6, 7, 8, tzinfo=timezone.utc)
    page = report_html(target(), 0, stats, w, IMAGES, LABELS, {"name": "<b>loop</b>", "note": "a & b"}, stamp)
    assert page.count("data:image/png;base64,") == 1 + 1 + N.DEFAULT_K  # heatmap, top mean, top k
    assert "&lt;b&gt;loop&lt;/b&gt;" in page and "a &amp; b" in page and "synthetic &lt;run&gt;" in page
    assert "2024-05-06 07:08 UTC" in page and "<script" not in page.lower() and 'src="http' not in page
    heat = re.search(r'<img src="(data:[^"]+)" alt="weights"', page).group(1)
    expected = I.diverging_rgb(w[0].reshape(28, 28), float(np.abs(w).max())).repeat(8, 0).repeat(8, 1)
    np.testing.assert_array_equal(decode(heat), expected)
    captions = re.findall(r"<figcaption><b>(\d)</b> · ([-0-9.]+)</figcaption>", page)
    assert captions == [(str(LABELS[i]), f"{stats.acts[i, 0]:.3f}") for i in stats.top[0]]
    deeper = report_html(target(first=False), 0, stats, RNG.normal(size=(3, 20)), IMAGES, LABELS, {})
    assert 'alt="weights"' not in deeper and deeper.count("data:image/png;base64,") == 1 + N.DEFAULT_K
