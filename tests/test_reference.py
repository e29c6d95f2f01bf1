"""The NumPy reference: the seed's worked example, known identities, and backward vs finite differences."""
import numpy as np
import pytest

from groupnorm import reference as R
from groupnorm.demo import EPS, SEED_INPUT, SEED_OUTPUT_A, SEED_STATS, compute

from helpers import numerical_gradient

SEED_FWD = {
    "BN": lambda x: R.batch_norm(x, eps=EPS),
    "LN": lambda x: R.layer_norm(x, eps=EPS),
    "IN": lambda x: R.instance_norm(x, eps=EPS),
    "GN": lambda x: R.group_norm(x, 2, eps=EPS),
}


@pytest.mark.parametrize("method", ["BN", "LN", "IN", "GN"])
def test_seed_worked_example(method):
    y = SEED_FWD[method](SEED_INPUT)
    assert y.shape == (3, 4, 1, 2)
    np.testing.assert_allclose(y[0, :, 0, :], np.array(SEED_OUTPUT_A[method]), atol=1e-3, rtol=0)


def test_seed_stats_and_rows():
    rows = compute()
    assert len(rows) == 4 * (2 + 8)
    assert max(r[5] for r in rows) <= 1e-3
    # The statistics the seed states for the first coefficient of a.
    mean, var = R.moments(SEED_INPUT[0, 0:2], (0, 1, 2))
    assert abs(mean.item() - SEED_STATS["GN"][0]) < 1e-12 and abs(var.item() - 3.6875) < 1e-12


def test_seed_exact_values_the_seed_rounds_inconsistently():
    # LN at a[1,0,0] is -0.7737 (seed: -0.773) and GN at a[2,0,1] is -0.6325 (seed: -0.633).
    assert R.layer_norm(SEED_INPUT, eps=EPS)[0, 1, 0, 0] == pytest.approx(-4.625 / np.sqrt(35.734375 + EPS))
    assert R.group_norm(SEED_INPUT, 2, eps=EPS)[0, 2, 0, 1] == pytest.approx(-2 / np.sqrt(10 + EPS))


def test_identities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 4, 5))
    g, b = rng.normal(size=6), rng.normal(size=6)
    np.testing.assert_allclose(R.group_norm(x, 1, g, b), R.layer_norm(x, g, b), atol=1e-12)
    np.testing.assert_allclose(R.group_norm(x, 6, g, b), R.instance_norm(x, g, b), atol=1e-12)
    np.testing.assert_allclose(R.group_norm(x, group_size=2), R.group_norm(x, 3), atol=0)
    # BN of one sample equals IN; BN inference with the batch's own biased stats equals BN training.
    np.testing.assert_allclose(R.batch_norm(x[:1]), R.instance_norm(x[:1]), atol=1e-12)
    mean, var = R.moments(x, (0, 2, 3))
    np.testing.assert_allclose(R.batch_norm_inference(x, mean.ravel(), var.ravel(), g, b), R.batch_norm(x, g, b), atol=1e-12)
    # Normalized groups have zero mean and (almost) unit variance.
    y = R.group_norm(x, 3).reshape(3, 3, -1)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-4)


def test_running_update_matches_pytorch_convention():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(4, 3, 5))
    rm, rv = np.zeros(3), np.ones(3)
    m, v = R.batch_norm_update_running(x, rm, rv, momentum=0.1)
    flat = x.transpose(1, 0, 2).reshape(3, -1)
    np.testing.assert_allclose(m, 0.9 * rm + 0.1 * flat.mean(1))
    np.testing.assert_allclose(v, 0.9 * rv + 0.1 * flat.var(1, ddof=1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        R.batch_norm_update_running(x[:1, :, :1], rm, rv)


def test_constant_group_gives_beta():
    x = np.full((2, 4, 3), 7.0)
    b = np.array([1.0, 2.0, 3.0, 4.0])
    y = R.group_norm(x, 2, np.full(4, 5.0), b)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.broadcast_to(b[None, :, None], y.shape))


def test_weight_standardize_properties():
    rng = np.random.default_rng(2)
    w = rng.normal(3.0, 2.0, size=(5, 3, 3, 3))
    wh = R.weight_standardize(w, eps=0.0)
    np.testing.assert_allclose(wh.reshape(5, -1).mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(wh.reshape(5, -1).var(1), 1, atol=1e-12)


def test_weight_norm_properties():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(4, 3, 2))
    g = rng.uniform(0.5, 2, size=4)
    w = R.weight_norm(v, g, dim=0)
    np.testing.assert_allclose(np.sqrt((w ** 2).reshape(4, -1).sum(1)), g)
    g1 = rng.uniform(0.5, 2, size=3)
    w1 = R.weight_norm(v, g1, dim=1)
    np.testing.assert_allclose(np.sqrt((w1 ** 2).sum(axis=(0, 2))), g1)
    with pytest.raises(ValueError, match="dim=3"):
        R.weight_norm(v, g, dim=3)


# ---------------------------------------------------------------------------------------- finite differences
def numeric_grad(f, arrays, dy):
    """Central differences of L = sum(f(*arrays) * dy) with respect to each array (helpers.numerical_gradient)."""
    return numerical_gradient(lambda *a: np.sum(f(*a) * dy), arrays, h=1e-6)


SHAPES = {2: (3, 6), 3: (2, 6, 3), 4: (2, 6, 2, 3), 5: (2, 6, 2, 1, 2)}


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@pytest.mark.parametrize(
    "method",
    ["bn", "ln", "in", "gn1", "gn3", "gn6", "gn3-relu", "gn3-silu", "gn2-gelu"],
)
def test_norm_backward_matches_finite_differences(method, rank):
    rng = np.random.default_rng(rank)
    shape = SHAPES[rank]
    x = rng.normal(size=shape)
    gamma, beta = rng.normal(size=6), rng.normal(size=6)
    dy = rng.normal(size=shape)
    if method.startswith("gn"):
        head, _, act = method.partition("-")
        groups, act = int(head[2:]), (act or None)
        fwd = lambda x, g, b: R.group_norm(x, groups, g, b, activation=act)  # noqa: E731
        dx, dg, db = R.group_norm_backward(dy, x, groups, gamma, beta, activation=act)
    else:
        f = {"bn": R.batch_norm, "ln": R.layer_norm, "in": R.instance_norm}[method]
        bwd = {"bn": R.batch_norm_backward, "ln": R.layer_norm_backward, "in": R.instance_norm_backward}[method]
        fwd = lambda x, g, b: f(x, g, b)  # noqa: E731
        dx, dg, db = bwd(dy, x, gamma)
    ndx, ndg, ndb = numeric_grad(fwd, [x, gamma, beta], dy)
    np.testing.assert_allclose(dx, ndx, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(dg, ndg, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(db, ndb, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_weight_standardize_backward(rank):
    rng = np.random.default_rng(10 + rank)
    w = rng.normal(size=(3, 4, 2, 2, 1)[:rank])
    dy = rng.normal(size=w.shape)
    (nd,) = numeric_grad(lambda w: R.weight_standardize(w), [w], dy)
    np.testing.assert_allclose(R.weight_standardize_backward(dy, w), nd, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rank,dim", [(2, 0), (3, 0), (4, 0), (4, 1), (5, 0), (3, None)])
def test_weight_norm_backward(rank, dim):
    rng = np.random.default_rng(20 + rank)
    v = rng.normal(size=(3, 4, 2, 2, 2)[:rank])
    g = rng.uniform(0.5, 2.0, size=() if dim is None else (v.shape[dim],))
    dy = rng.normal(size=v.shape)
    dv, dg = R.weight_norm_backward(dy, v, g, dim=dim)
    g_arr = np.array(g, dtype=np.float64)
    ndv, ndg = numeric_grad(lambda v, g: R.weight_norm(v, g, dim=dim), [v, g_arr], dy)
    np.testing.assert_allclose(dv, ndv, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(dg, ndg, atol=1e-6, rtol=1e-5)
    assert np.shape(dg) == np.shape(g)


@pytest.mark.parametrize("act", ["relu", "silu", "gelu"])
def test_activation_backward(act):
    y = np.linspace(-3, 3, 13) + 0.01
    dz = np.ones_like(y)
    (nd,) = numeric_grad(lambda y: R.activation(y, act), [y.copy()], dz)
    np.testing.assert_allclose(R.activation_backward(dz, y, act), nd, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_groups": 3}, "num_groups=3 does not divide num_channels=64"),
        ({"group_size": 5}, "group_size=5 does not divide num_channels=64"),
        ({}, "exactly one of num_groups and group_size"),
        ({"num_groups": 2, "group_size": 32}, "exactly one"),
        ({"num_groups": 0}, "num_groups=0"),
        ({"num_groups": -4}, "num_groups=-4"),
    ],
)
def test_reference_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R.group_norm(np.zeros((1, 64, 2)), **kwargs)


def test_reference_rank_and_param_errors():
    with pytest.raises(ValueError, match="rank >= 2"):
        R.group_norm(np.zeros(4), 2)
    with pytest.raises(ValueError, match=r"gamma must have shape \(4,\)"):
        R.group_norm(np.zeros((1, 4, 2)), 2, gamma=np.ones(3))
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        R.group_norm(np.zeros((1, 4, 2)), 2, activation="tanh")
    with pytest.raises(TypeError, match="bool"):
        R.group_norm(np.zeros((1, 4, 2), dtype=bool), 2)
