"""Linear CKA (Kornblith et al. 2019) against its defining properties and a direct implementation."""
import numpy as np
import pytest
from scipy.stats import ortho_group

from dashboard.analytics.cka import cka_matrix, linear_cka


def hsic_cka(x, y):
    """The definition through n × n Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), H the centring matrix."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


@pytest.fixture
def rng():
    return np.random.default_rng(14)


def test_cka_of_a_representation_and_its_orthogonal_rotation_is_one(rng):
    x = rng.normal(size=(300, 30))
    q = ortho_group.rvs(30, random_state=1)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_isotropic_scaling(rng):
    x, y = rng.normal(size=(200, 20)), rng.normal(size=(200, 12))
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(linear_cka(x, y), rel=1e-12)


def test_cka_is_not_invariant_to_an_arbitrary_linear_map(rng):
    x = rng.normal(size=(200, 10))
    stretch = np.diag([100.0] + [1.0] * 9)
    assert linear_cka(x, x @ stretch) < 0.5


@pytest.mark.parametrize("shape", [(50, 5, 5), (120, 30, 7), (400, 16, 40)])
def test_cka_matches_the_gram_matrix_definition_on_random_matrices(rng, shape):
    n, p, q = shape
    x = rng.normal(size=(n, p))
    y = x[:, :min(p, q)] @ rng.normal(size=(min(p, q), q)) + rng.normal(size=(n, q))  # related, not equal
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)


def test_cka_matrix_is_every_pair_with_ones_on_the_diagonal(rng):
    layers = [rng.normal(size=(100, w)) for w in (8, 20, 3)]
    m = cka_matrix(layers)
    ref = np.array([[hsic_cka(a, b) for b in layers] for a in layers])
    np.testing.assert_allclose(m, ref, rtol=1e-10)


def test_a_constant_layer_has_cka_zero_not_nan(rng):
    assert linear_cka(np.ones((50, 4)), rng.normal(size=(50, 4))) == 0.0
    assert cka_matrix([np.ones((50, 4)), rng.normal(size=(50, 4))])[0, 0] == 0.0
