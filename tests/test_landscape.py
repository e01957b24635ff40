"""Loss landscape: PCA directions of a weight trajectory, and the loss on the plane they span."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dashboard.analytics import landscape as L
from training import contract as C
from training.config import RunConfig
from training.nets.models import init_params, layers_of, to_module

MLP = RunConfig(sizes=(784, 8, 10), activation="sigmoid", loss="mse")
MLP_CE = RunConfig(sizes=(784, 6, 5, 10), activation="relu", loss="cross_entropy")
CNN = RunConfig(arch="cnn", activation="relu", loss="cross_entropy")


def snapshot_of(config, seed):
    params = init_params(config, torch.Generator().manual_seed(seed))
    snap = {}
    for layer in layers_of(config):
        snap[C.weight_key(layer.name)] = params[f"{layer.name}.weight"].numpy()
        snap[C.bias_key(layer.name)] = params[f"{layer.name}.bias"].numpy()
    return snap


def reference_loss(config, vector, x, y):
    """The loss of one parameter vector through a plain nn.Module, the way users would compute it."""
    (params,) = L.unflatten(torch.as_tensor(vector[None], dtype=torch.float32), config)
    logits = to_module(config, params)(x)
    if config.loss == "cross_entropy":
        return F.cross_entropy(logits, y).item()
    return (0.5 * (torch.sigmoid(logits) - F.one_hot(y, 10)).pow(2).sum(1)).mean().item()


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_flatten_and_unflatten_round_trip_in_pytorch_layout():
    snap = snapshot_of(MLP_CE, 1)
    vec = L.flatten(snap, MLP_CE)
    assert vec.shape == (sum(v.size for v in snap.values()),)
    (back,) = L.unflatten(torch.as_tensor(vec[None], dtype=torch.float32), MLP_CE)
    for layer in layers_of(MLP_CE):
        np.testing.assert_allclose(back[f"{layer.name}.weight"].numpy(), snap[C.weight_key(layer.name)], rtol=1e-6)


def test_pca_recovers_the_plane_of_a_planar_trajectory():
    rng = np.random.default_rng(0)
    p = 50
    u, v = np.linalg.qr(rng.standard_normal((p, 2)))[0].T
    final = rng.standard_normal(p)
    coords = np.array([[3.0, 1.0], [2.0, -1.5], [1.0, 0.7], [0.4, -0.2], [0.0, 0.0]])
    thetas = final + coords[:, :1] * u + coords[:, 1:] * v
    directions, path, explained = L.pca_directions(thetas)
    np.testing.assert_allclose(directions @ directions.T, np.eye(2), atol=1e-10)
    # Every snapshot lies in the plane, so the projection reconstructs it exactly, and the final one is the origin.
    np.testing.assert_allclose(final + path @ directions, thetas, atol=1e-10)
    np.testing.assert_allclose(path[-1], [0, 0], atol=1e-12)
    assert explained.sum() == pytest.approx(1.0) and explained[0] >= explained[1]


def test_pca_of_a_straight_line_puts_all_variance_on_the_first_direction():
    rng = np.random.default_rng(1)
    final, step = rng.standard_normal(20), rng.standard_normal(20)
    thetas = np.stack([final + t * step for t in (4, 3, 2, 1, 0)])
    directions, path, explained = L.pca_directions(thetas)
    assert abs(directions[0] @ step) / np.linalg.norm(step) == pytest.approx(1.0)
    assert explained[0] == pytest.approx(1.0)
    np.testing.assert_allclose(np.abs(path[:, 0]), np.linalg.norm(step) * np.array([4, 3, 2, 1, 0]), rtol=1e-9)


def test_two_snapshots_use_the_displacement_and_a_seeded_orthogonal_direction():
    rng = np.random.default_rng(2)
    thetas = rng.standard_normal((2, 30))
    directions, path, explained = L.pca_directions(thetas)
    d = thetas[0] - thetas[1]
    np.testing.assert_allclose(directions[0], d / np.linalg.norm(d))
    assert directions[0] @ directions[1] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(path, [[np.linalg.norm(d), 0], [0, 0]], atol=1e-12)
    assert np.isnan(explained).all()
    np.testing.assert_array_equal(L.pca_directions(thetas)[0], directions)  # reproducible


def test_three_snapshots_span_their_own_plane_exactly():
    rng = np.random.default_rng(3)
    thetas = rng.standard_normal((3, 40))
    directions, path, explained = L.pca_directions(thetas)
    np.testing.assert_allclose(thetas[-1] + path @ directions, thetas, atol=1e-10)
    assert explained[0] == pytest.approx(1.0) and np.isnan(explained[1])


def test_the_grid_covers_the_path_with_a_margin():
    path = np.array([[-4.0, 1.0], [-1.0, -2.0], [0.0, 0.0]])
    a, b = L.grid_axes(path, resolution=11, margin=0.25)
    assert len(a) == len(b) == 11
    assert a[0] == pytest.approx(-5.0) and a[-1] == pytest.approx(1.0)  # span 4, 25 % each side
    assert b[0] == pytest.approx(-2.75) and b[-1] == pytest.approx(1.75)


@pytest.mark.parametrize("config", [MLP, MLP_CE, CNN], ids=["mlp-mse", "mlp-ce", "cnn"])
def test_stacked_losses_match_a_plain_module_per_point(config):
    x, y = data(32)
    points = np.stack([L.flatten(snapshot_of(config, s), config) for s in range(3)])
    got = L.losses_at(config, points, x, y)
    want = [reference_loss(config, p, x, y) for p in points]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_landscape_shapes_and_the_final_snapshot_at_the_origin():
    x, y = data(64)
    snaps = [snapshot_of(MLP, s) for s in range(4)]
    ls = L.loss_landscape(MLP, snaps, [0, 1, 2, 3], x, y, resolution=7)
    assert ls.loss.shape == (7, 7) and ls.path.shape == (4, 2) and np.isfinite(ls.loss).all()
    final = L.flatten(snaps[-1], MLP)
    assert ls.path_loss[-1] == pytest.approx(reference_loss(MLP, final, x, y), rel=1e-4)
    # Grid value (j, i) is the loss at final + alphas[i] * d1 + betas[j] * d2.
    thetas = np.stack([L.flatten(s, MLP) for s in snaps])
    directions, _, _ = L.pca_directions(thetas)
    point = final + ls.alphas[2] * directions[0] + ls.betas[5] * directions[1]
    assert ls.loss[5, 2] == pytest.approx(reference_loss(MLP, point, x, y), rel=1e-4)


def test_progress_is_reported_row_by_row():
    x, y = data(16)
    seen = []
    L.loss_landscape(MLP, [snapshot_of(MLP, s) for s in range(3)], [0, 1, 2], x, y, resolution=5,
                     progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_one_snapshot_is_not_enough():
    x, y = data(8)
    with pytest.raises(ValueError, match="two weight snapshots"):
        L.loss_landscape(MLP, [snapshot_of(MLP, 0)], [0], x, y)


def test_a_runs_params_give_the_config_the_landscape_rebuilds_old_and_new():
    old = {"arch": "mlp-784-20-10-sigmoid", "sizes": "784,20,10", "activation": "sigmoid", "loss": "mse", "lr": "3.0"}
    assert RunConfig.from_params(old).sizes == (784, 20, 10) and RunConfig.from_params(old).arch == "mlp"
    cnn = {"arch": "cnn-relu", "sizes": "cnn", "activation": "relu", "loss": "cross_entropy"}
    assert RunConfig.from_params(cnn).arch == "cnn"
    assert RunConfig.from_params(CNN.as_params()) == CNN


def test_the_first_training_images_read_from_the_raw_files_are_the_loaded_ones():
    from dashboard.loaders.run_data import train_prefix
    from training.nets.data import load
    full = load()
    for n in (1, 300, 1000):
        x, y = train_prefix(n)
        assert x.dtype == full.train_x.dtype and y.dtype == full.train_y.dtype
        assert torch.equal(x, full.train_x[:n]) and torch.equal(y, full.train_y[:n])


def test_training_images_are_refused_when_a_file_is_altered(tmp_path):
    import shutil

    from dashboard.loaders.run_data import train_prefix
    from training.nets.data import DataError, data_root, raw_dir
    shutil.copytree(raw_dir(data_root()), raw_dir(tmp_path))
    images = raw_dir(tmp_path) / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[-1] ^= 1  # one pixel of the last image: outside the prefix read, still caught by the checksum
    images.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256 mismatch"):
        train_prefix(10, tmp_path)


def test_a_real_runs_landscape_descends_along_its_path(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    from dashboard.read import store
    from dashboard.loaders.run_data import train_prefix
    rid = trained_store.run_ids["relu"]
    config = RunConfig.from_params(store.get_run(rid).data.params)
    epochs = store.snapshot_epochs(rid)
    x, y = train_prefix(300)
    ls = L.loss_landscape(config, [store.load_snapshot(rid, e) for e in epochs], epochs, x, y, resolution=5)
    assert ls.loss.shape == (5, 5) and np.isfinite(ls.loss).all()
    assert ls.path_loss[-1] < ls.path_loss[0]  # training lowered the training loss
    assert ls.loss.max() > ls.path_loss[-1]  # the surface rises away from where training ended
