"""Neuron analytics on synthetic units whose answers are known by construction."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import neurons as N

RNG = np.random.default_rng(0)
LABELS = np.repeat(np.arange(10), 100)
IMAGES = RNG.integers(0, 256, size=(len(LABELS), 28, 28)).astype(np.uint8)


def stats_of(*units, floor=0.0):
    return N.layer_stats(np.stack(units, axis=1), LABELS, IMAGES, floor=floor)


def test_a_unit_firing_only_for_threes_has_si_near_one_and_is_class_selective_for_3():
    unit = np.where(LABELS == 3, 0.9, 0.0) + RNG.uniform(0, 0.01, len(LABELS))
    s = stats_of(unit)
    assert s.si[0] == pytest.approx(1.0, abs=0.03)
    assert s.preferred[0] == 3
    assert s.verdicts[0] == "class-selective (digit 3)"
    # It tells "3 or not 3" exactly, which is all a one-digit unit can tell: I = H(A) = 0.325 nats,
    # H(label) = 2.30 nats, so NMI = 0.325 / ((0.325 + 2.30) / 2) = 0.25.
    assert s.nmi[0] == pytest.approx(0.25, abs=0.02)


def test_a_constant_unit_has_si_zero_and_is_dead():
    s = stats_of(np.full(len(LABELS), 0.42))
    assert s.si[0] == pytest.approx(0.0, abs=1e-9)
    assert s.dead[0]
    assert s.verdicts[0] == "dead"
    assert s.nmi[0] == 0.0


def test_a_unit_that_ignores_the_class_is_feature_selective_with_low_si_and_nmi():
    unit = RNG.uniform(0, 1, len(LABELS))
    s = stats_of(unit)
    assert s.si[0] < 0.1
    assert s.nmi[0] < 0.05
    assert s.verdicts[0] == "feature-selective"


def test_a_unit_shared_by_two_digits_is_feature_selective():
    unit = np.isin(LABELS, [1, 7]).astype(float) + RNG.uniform(0, 0.01, len(LABELS))
    s = stats_of(unit)
    # mu_max = 1, mu_rest = 1/9: SI = 0.8, but its top images are half ones, half sevens.
    assert s.si[0] == pytest.approx(0.8, abs=0.02)
    assert s.verdicts[0] == "feature-selective"


def test_high_si_alone_is_not_enough_when_the_top_images_are_another_digit():
    unit = np.where(LABELS == 5, 0.5, 0.0)
    unit[LABELS == 2] = 0.0
    unit[np.flatnonzero(LABELS == 2)[:8]] = 1.0  # eight outlier twos top the ranking
    s = stats_of(unit)
    assert s.preferred[0] == 5 and s.si[0] >= N.SI_THRESHOLD
    assert s.verdicts[0] == "feature-selective"


def test_tanh_units_are_shifted_by_their_floor_before_si():
    unit = np.where(LABELS == 3, 1.0, -1.0)
    means = N.class_means(unit[:, None], LABELS)
    si, preferred = N.selectivity_index(means, floor=N.activation_floor("tanh"))
    assert si[0] == pytest.approx(1.0) and preferred[0] == 3
    half = np.where(LABELS == 3, 1.0, 0.0)  # tanh 0 is halfway up: rest mean 1 on the shifted scale
    si_half, _ = N.selectivity_index(N.class_means(half[:, None], LABELS), floor=-1.0)
    assert si_half[0] == pytest.approx((2 - 1) / (2 + 1))


def test_top_k_are_the_k_highest_activations_highest_first():
    acts = RNG.normal(size=(len(LABELS), 3))
    top = N.top_k(acts, 8)
    bottom = N.bottom_k(acts, 8)
    for u in range(3):
        expected = np.sort(acts[:, u])[::-1][:8]
        np.testing.assert_array_equal(acts[top[u], u], expected)
        np.testing.assert_array_equal(acts[bottom[u], u], np.sort(acts[:, u])[:8])


def test_mean_of_top_images_is_their_pixel_mean():
    acts = RNG.normal(size=(len(LABELS), 2))
    s = N.layer_stats(acts, LABELS, IMAGES)
    np.testing.assert_allclose(s.top_mean[1], IMAGES[s.top[1]].astype(np.float32).mean(0), rtol=1e-6)


def test_matching_recovers_a_permutation_of_units():
    a = RNG.normal(size=(2000, 12))
    perm = RNG.permutation(12)
    b = a[:, perm] + RNG.normal(scale=0.3, size=a.shape)
    match, corr, method = N.match_units(a, b)
    # unit u of a is column j of b where perm[j] == u
    np.testing.assert_array_equal(match, np.argsort(perm))
    assert (corr > 0.9).all()
    assert method.startswith("one-to-one")


def test_matching_layers_of_different_width_takes_each_units_best_match():
    a = RNG.normal(size=(2000, 4))
    b = np.concatenate([a[:, [2, 0]], a[:, [2]] * 0.5 + RNG.normal(scale=0.1, size=(2000, 1)),
                        RNG.normal(size=(2000, 3))], axis=1)
    match, corr, method = N.match_units(a, b)
    assert match[0] == 1 and match[2] == 0
    assert corr[0] == pytest.approx(1.0)
    assert method == "best match per unit"


def test_constant_units_correlate_zero_not_nan():
    a = np.stack([np.ones(100), np.arange(100.0)], 1)
    corr = N.correlation_matrix(a, a)
    assert np.isfinite(corr).all()
    assert corr[0, 0] == 0 and corr[1, 1] == pytest.approx(1.0)


def test_ties_in_activation_are_ranked_by_the_tiebreak_and_top_k_stays_the_highest():
    acts = np.array([[1.0], [0.5], [1.0], [1.0], [0.2]])
    pre = np.array([[20.0], [0.0], [40.0], [30.0], [-2.0]])
    assert N.top_k(acts, 3, tiebreak=pre)[0].tolist() == [2, 3, 0]
    assert N.bottom_k(acts, 2, tiebreak=pre)[0].tolist() == [4, 1]
    assert N.top_k(acts, 3)[0].tolist() == [0, 2, 3]


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 16), st.integers(0, 2**31 - 1))
def test_any_permutation_of_units_is_recovered_and_si_and_nmi_stay_in_range(width, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, size=(500, width))
    perm = rng.permutation(width)
    match, corr, _ = N.match_units(a, a[:, perm])
    np.testing.assert_array_equal(perm[match], np.arange(width))
    np.testing.assert_allclose(corr, 1.0, atol=1e-9)
    labels = rng.integers(0, 10, 500)
    si, _ = N.selectivity_index(N.class_means(a, labels))
    nmi = N.normalized_mutual_information(a, labels)
    assert ((0 <= si) & (si <= 1)).all() and ((0 <= nmi) & (nmi <= 1)).all()
