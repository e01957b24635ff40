"""Circuit contributions and digit maps are exact: checked against a direct computation in the test.

The reference reads the snapshot's .npz straight from the artifact store, reruns the network with plain torch
ops (not training's StackedNet or compute_activations), and takes weight x mean activation by hand.
"""
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from dashboard.read.store import StoreError
from training import contract as C
from training.nets import circuits as K

ACT = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


@pytest.fixture
def store_at(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    return trained_store


def reference(uri: str, run_id: str):
    """(weights, biases, each hidden layer's mean activation, the output's mean pre-activation) at the last
    snapshot, recomputed here from the .npz with torch on the 10,000 test images."""
    from common import mnist_idx
    c = MlflowClient(uri)
    run = c.get_run(run_id)
    names = run.data.params[C.PARAM_LAYERS].split(",")
    last = max(C.snapshot_epoch(f.path) for f in c.list_artifacts(run_id, C.SNAPSHOT_DIR))
    with np.load(c.download_artifacts(run_id, C.snapshot_path(last)), allow_pickle=False) as npz:
        w = [torch.from_numpy(npz[C.weight_key(n)]).double() for n in names]
        b = [torch.from_numpy(npz[C.bias_key(n)]).double() for n in names]
    images, _ = mnist_idx.test_set()
    h = torch.from_numpy(images.reshape(len(images), -1).astype(np.float64) / 255.0)
    act, means = ACT[run.data.params[C.PARAM_ACTIVATION]], []
    for i in range(len(names) - 1):
        h = act(h @ w[i].T + b[i])
        means.append(h.mean(0).numpy())
    out = (h @ w[-1].T + b[-1]).mean(0).numpy()
    return [x.numpy() for x in w], [x.numpy() for x in b], means, out, last


def test_a_units_incoming_and_outgoing_contributions_equal_weight_times_mean_activation(store_at):
    from dashboard.loaders import unit_circuits as L
    from dashboard.loaders.neuron_target import resolve
    rid = store_at.run_ids["relu"]  # [784, 16, 16, 10]: layer 2 has hidden units on both sides
    w, _, means, _, last = reference(store_at.tracking_uri, rid)
    for unit in range(16):
        c = L.circuit(resolve(rid, 2, last, unit))
        direct_in = w[1][unit] * means[0]  # into unit from each unit of layer 1
        direct_out = w[2][:, unit] * means[1][unit]  # out of it into each digit
        for links, direct in ((c.incoming, direct_in), (c.outgoing, direct_out)):
            assert len(links) == min(L.TOP_K, len(direct))
            got = {l.unit: l.contribution for l in links}
            np.testing.assert_allclose([got[u] for u in got], direct[list(got)], rtol=1e-5, atol=1e-6)
            strongest = np.sort(np.abs(direct))[::-1][:len(links)]  # the links are the largest in magnitude
            np.testing.assert_allclose(np.abs(list(got.values())), strongest, rtol=1e-5, atol=1e-6)
        assert c.to_output and c.mean == pytest.approx(means[1][unit], rel=1e-5, abs=1e-7)


def test_the_first_layer_has_no_incoming_units_and_feeds_the_next_hidden_layer(store_at):
    from dashboard.loaders import unit_circuits as L
    from dashboard.loaders.neuron_target import resolve
    rid = store_at.run_ids["relu"]
    w, _, means, _, last = reference(store_at.tracking_uri, rid)
    c = L.circuit(resolve(rid, 1, last, 5))
    assert c.incoming is None and not c.to_output
    got = {l.unit: l.contribution for l in c.outgoing}
    np.testing.assert_allclose(list(got.values()), (w[1][:, 5] * means[0][5])[list(got)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("run", ["sigmoid", "relu"])
def test_the_digit_map_is_each_units_push_and_adds_up_to_the_mean_output(store_at, run):
    from dashboard.loaders import unit_circuits as L
    from dashboard.loaders.neuron_target import resolve
    rid = store_at.run_ids[run]
    w, b, means, out, last = reference(store_at.tracking_uri, rid)
    t = L.last_hidden(resolve(rid, 1, last))
    for digit in range(10):
        m = L.digit_map(t, digit)
        direct = w[-1][digit] * means[-1]
        up = [u for u in np.argsort(-direct, kind="stable") if direct[u] > 0][:L.TOP_K]
        down = [u for u in np.argsort(direct, kind="stable") if direct[u] < 0][:L.TOP_K]
        assert [l.unit for l in m.up] == up and [l.unit for l in m.down] == down
        np.testing.assert_allclose([l.contribution for l in m.up + m.down], direct[up + down], rtol=1e-5, atol=1e-6)
        assert m.bias == pytest.approx(b[-1][digit])
        assert m.total == pytest.approx(out[digit], rel=1e-4, abs=1e-5)  # bias + every push = the mean output
        assert m.pushing_up == int((direct > 0).sum())


def test_conv_runs_and_foreign_runs_get_one_line_why(store_at):
    from dashboard.loaders import unit_circuits as L
    from dashboard.loaders.neuron_target import resolve
    with pytest.raises(StoreError, match="conv layers: circuits join dense layers only") as e:
        L.circuit(resolve(store_at.run_ids["cnn"], 1, None, 0))
    assert "\n" not in str(e.value)
    with pytest.raises(StoreError):
        resolve(store_at.run_ids["foreign"], 1)
    with pytest.raises(StoreError, match="digit 10 does not exist"):
        L.parse_digit("10")


def test_the_strongest_links_are_ranked_by_magnitude_with_sign_kept():
    weights = [np.zeros((3, 784)), np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]), np.array([[3.0, -1.0]] * 10)]
    means = [np.array([1.0, 1.0, 4.0]), np.array([0.5, 2.0])]
    c = K.unit_circuit(weights, means, 2, 0, k=3)
    assert [(l.unit, l.contribution) for l in c.incoming] == [(1, -2.0), (2, 2.0), (0, 1.0)]  # tie: lower unit first
    assert [l.contribution for l in c.outgoing] == [1.5, 1.5, 1.5] and c.to_output
    m = K.digit_map(weights[2], np.arange(10.0), means[1], 3, k=2)
    assert [(l.unit, l.contribution) for l in m.up] == [(0, 1.5)] and [(l.unit, l.contribution) for l in m.down] == [
        (1, -2.0)]
    assert (m.total, m.pushing_up) == (3 + 1.5 - 2.0, 1)


def test_a_run_from_its_own_loop_gets_the_one_line_reason_its_network_cannot_be_rebuilt(store_at):
    """A Target as resolve makes one for an own-loop run (own_loop, no config, its reason): the pages show the reason."""
    import dataclasses

    from dashboard.loaders import unit_circuits as L
    from dashboard.loaders.neuron_target import _own_loop_reason, resolve
    t = resolve(store_at.run_ids["sigmoid"], 1, None, 0)
    own = dataclasses.replace(t, own_loop=True, config=None, no_config=_own_loop_reason(t.run_id))
    with pytest.raises(StoreError, match="logged from its own training loop") as e:
        L.circuit(own)
    assert "\n" not in str(e.value)
