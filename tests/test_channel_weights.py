"""A Linear after a conv (issue #28, item 3): the unit page draws its incoming weights per channel of the
conv's flattened output, as small heatmaps, not as thousands of bars.  Checked against numpy's reshape of
the logged weights, on a real model logged from its own loop (tests/test_own_loop.OddNet: a 4-channel conv,
pooled to 13 x 13, then a Linear of 676 inputs)."""
import numpy as np
import torch

from dashboard.loaders import neuron_stats
from dashboard.loaders.neuron_target import resolve
from dashboard.read import cache
from dashboard.views.neurons.neuron_figures import channel_mosaic, weights_figure
from tests.test_own_loop import OddNet
from training.own_loop import logged_run


def test_each_channel_is_a_tile_equal_to_the_rows_reshape_and_the_hover_names_it():
    rng = np.random.default_rng(0)
    for channels, side in ((4, 13), (5, 3), (1, 7), (9, 2)):
        row = rng.normal(size=channels * side * side)
        z, where = channel_mosaic(row, channels)
        tiles = row.reshape(channels, side, side)
        assert np.isfinite(z).sum() == row.size  # every weight drawn once, the rest is gap
        for ch in range(channels):
            top, left = np.argwhere((where[..., 0] == ch) & (where[..., 1] == 0) & (where[..., 2] == 0))[0]
            np.testing.assert_array_equal(z[top:top + side, left:left + side], tiles[ch])
            assert (where[top:top + side, left:left + side, 1] == np.arange(side)[:, None]).all()
    assert channel_mosaic(rng.normal(size=4 * 13 * 13 + 1), 4) is None  # not channels x a square: bars
    assert channel_mosaic(rng.normal(size=4 * 12 * 13), 4) is None


def test_the_unit_page_draws_a_linear_after_a_conv_per_channel_and_a_linear_after_a_linear_as_bars():
    torch.manual_seed(0)
    model = OddNet()
    with logged_run(model) as run:
        run.log_epoch(0)
    cache.clear()
    after_conv = resolve(run.run_id, 2, None, 5)
    assert after_conv.layer_name == "blocks.a_1.lin 0"
    w = neuron_stats.weights(after_conv)
    (trace,) = weights_figure(after_conv, w, 5).data
    assert trace.type == "heatmap"
    z = np.array(trace.z, dtype=float)
    expected = model.blocks["a_1"]["lin 0"].weight.detach().numpy()[5].reshape(4, 13, 13)
    where = np.array(trace.customdata)
    for ch in range(4):  # each channel's tile, where its hover says it is, is that channel's 13 x 13 weights
        at = where[..., 0] == ch
        np.testing.assert_allclose(z[at].reshape(13, 13), expected[ch], rtol=1e-6)
    after_linear = resolve(run.run_id, 3, None, 0)
    assert weights_figure(after_linear, neuron_stats.weights(after_linear), 0).data[0].type == "bar"
