"""The deeper neuron views' data on real runs of the trained store: emergence, similarity, map, one image."""
import numpy as np
import pytest

from dashboard.analytics.cka import linear_cka
from dashboard.loaders import deep_neurons as D
from dashboard.loaders import neuron_stats as S
from dashboard.loaders.neuron_target import resolve
from dashboard.read.store import StoreError


@pytest.fixture
def from_store(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.tracking_uri)
    return trained_store.run_ids


@pytest.mark.parametrize("run, layer", [("sigmoid", 1), ("relu", 2), ("cnn", 1)])
def test_emergence_epoch_is_the_first_epoch_whose_stored_verdict_is_class_selective(from_store, run, layer):
    t = resolve(from_store[run], layer)
    e = D.emergence(t)
    assert e.epochs == t.epochs
    by_epoch = [S.layer_stats(resolve(t.run_id, layer, ep)).verdicts for ep in t.epochs]
    for u in range(t.units):
        firsts = [ep for ep, v in zip(t.epochs, by_epoch) if v[u].startswith("class-selective")]
        assert e.emergence[u] == (firsts[0] if firsts else None), u
    for i, verdicts in enumerate(by_epoch):
        assert e.counts["class"][i] + e.counts["feature"][i] + e.counts["dead"][i] == t.units
        assert e.counts["dead"][i] == verdicts.count("dead")


def test_similarity_across_runs_and_epochs_is_cka_of_the_layers_activations(from_store):
    a, b = resolve(from_store["sigmoid"], 1), resolve(from_store["sigmoid_b"], 1)
    m = D.runs_similarity((a, b))
    assert m[0, 1] == pytest.approx(linear_cka(S.layer_stats(a).acts, S.layer_stats(b).acts), rel=1e-9)
    assert m[0, 0] == pytest.approx(1.0)
    e = D.epochs_similarity(a)
    assert e.shape == (len(a.epochs), len(a.epochs))
    first = S.layer_stats(resolve(a.run_id, 1, a.epochs[0])).acts
    assert e[0, -1] == pytest.approx(linear_cka(first, S.layer_stats(a).acts), rel=1e-9)


def test_the_layer_map_is_the_first_two_principal_components(from_store):
    t = resolve(from_store["relu"], 2)
    xy, how = D.layer_map(t, "pca")
    acts = S.layer_stats(t).acts.astype(np.float64)
    centred = acts - acts.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    for k in range(2):  # a principal axis is defined up to its sign
        sign = np.sign(ref[:, k] @ xy[:, k])
        np.testing.assert_allclose(xy[:, k], sign * ref[:, k], atol=1e-3 * np.abs(ref[:, k]).max())
    assert how.startswith("PCA")


@pytest.mark.parametrize("run", ["sigmoid", "cnn"])
def test_one_image_shows_the_layers_activations_the_outputs_and_complete_attributions(from_store, run):
    t = resolve(from_store[run], 1)
    d = D.one_image_data(t, 8)
    _, labels = S.test_images()
    assert d.label == labels[8]
    for layer, acts in enumerate(d.acts, start=1):  # the same numbers the layer pages computed for all images
        np.testing.assert_allclose(acts, S.layer_stats(resolve(t.run_id, layer, t.epoch)).acts[8], atol=1e-5)
    attrs = D.attributions(t, 8)
    assert len(d.probs) == 10 and set(attrs) == {int(np.argmax(d.probs)), d.label}
    for attr, diff, gap in attrs.values():
        assert attr.shape == (28, 28)
        assert attr.sum() - diff == pytest.approx(gap, abs=1e-4)  # the gap the page prints is the true one
        if run == "sigmoid":  # smooth along the path: complete within 1 %
            assert attr.sum() == pytest.approx(diff, rel=1e-2, abs=1e-4)


def test_a_feature_visualisation_of_a_conv2_channel_is_an_image_and_is_cached(from_store):
    t = resolve(from_store["cnn"], 2)
    vis = D.feature_vis(t, 3)
    assert vis.image.shape == (28, 28) and 0 <= vis.image.min() and vis.image.max() <= 1
    assert D.feature_vis(resolve(t.run_id, 2, None, 5), 3) is vis  # kept per run, epoch, layer and unit


@pytest.mark.parametrize("value, message", [("10000", "image 10000 does not exist"), ("-1", "image -1 does not"),
                                            ("x", "image index 'x' is not a whole number")])
def test_a_bad_image_index_is_one_line_for_people(value, message):
    with pytest.raises(StoreError, match=message):
        D.image_index(value)


def test_the_misclassified_gallerys_links_open_each_images_page():
    from dashboard.views.neurons.image_view import image_links
    row = image_links("r", np.array([5, 9]), np.array([0, 0, 0, 0, 0, 7, 0, 0, 0, 2]),
                      np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 3]), 2)
    links = row.children[1:]
    assert [(a.children, a.href) for a in links] == [("#5 (7→1)", "/runs/r/images/5?epoch=2"),
                                                     ("#9 (2→3)", "/runs/r/images/9?epoch=2")]
