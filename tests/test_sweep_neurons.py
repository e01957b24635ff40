"""Neurons across runs: three seeds of [784,20,10], each row's tile order checked against the Hungarian
assignment computed here from activations recomputed with numpy from the logged weights."""
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from dashboard.read import cache, store
from dashboard.views.sweep import sweep_neurons as SN
from training import contract as C

pytestmark = pytest.mark.slow  # trains three small runs and logs their models


@pytest.fixture(scope="module")
def seeds(module_store):
    from training.config import RunConfig
    from training.nets.data import load
    from training.engine.loop import train_cohort
    from training.tracking.mlflow_sink import MlflowSink, client
    data = load(train_size=1000)
    configs = [RunConfig(sizes=(784, 20, 10), train_size=1000, epochs=2, batch_size=20, lr=3.0, seed=s,
                         experiment="three-seeds") for s in (0, 1, 2)]
    sink = MlflowSink(client(), configs, data)
    sink.finish(train_cohort(configs, data, sink).params)
    return sink.run_ids


def _acts(run_id: str, epoch: int) -> np.ndarray:
    snap = store.load_snapshot(run_id, epoch)
    images, _ = store.test_set()
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return 1 / (1 + np.exp(-(x @ snap[C.weight_key("fc1")].T.astype(np.float64) + snap[C.bias_key("fc1")])))


def test_each_rows_tile_order_is_the_hungarian_assignment_on_activation_correlation(seeds, use_module_store):
    cache.clear()
    across = SN.load(",".join(seeds), layer="1")
    assert [r.target.run_id for r in across.rows] == seeds and across.epoch == 2
    first = _acts(seeds[0], 2)
    for row, other in zip(across.rows[1:], seeds[1:]):
        corr = np.corrcoef(first.T, _acts(other, 2).T)[:20, 20:]
        rows, cols = linear_sum_assignment(-corr)
        assert row.order == [int(c) for c in cols[np.argsort(rows)]]
        assert row.corr == pytest.approx([corr[u, row.order[u]] for u in range(20)], abs=1e-4)
        assert sorted(row.order) == list(range(20))  # one-to-one
    assert across.rows[0].order == list(range(20)) and len(across.rows[0].tiles) == 20


def test_a_missing_run_is_named_and_the_rest_still_show(seeds, use_module_store):
    across = SN.load(f"{seeds[0]},{'0' * 32},{seeds[1]}")
    assert len(across.rows) == 2 and any("0" * 32 in p for p in across.problems)
