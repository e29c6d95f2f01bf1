"""NumPy float64 reference of the normalization layers: the oracle every other path is tested against.

All feature normalizations here share one core. For an input ``x`` of shape ``(N, C, *spatial)`` each method
picks a set ``S_i`` of coefficients for every coefficient ``x_i`` and computes

.. math::

    \\mu_i = \\frac{1}{m} \\sum_{k \\in S_i} x_k, \\qquad
    \\sigma_i^2 = \\frac{1}{m} \\sum_{k \\in S_i} (x_k - \\mu_i)^2, \\qquad
    y_i = \\gamma_c \\frac{x_i - \\mu_i}{\\sqrt{\\sigma_i^2 + \\epsilon}} + \\beta_c

with a per-channel affine ``gamma, beta`` of shape ``(C,)``. The methods differ only in the axes they reduce
(Wu & He 2018, Figure 2):

========  =======================================  =====================================
method    view of x                                reduced axes
========  =======================================  =====================================
BN        ``(N, C, *S)``                           N and spatial (per channel)
LN        ``(N, C, *S)``                           C and spatial (per sample)
IN        ``(N, C, *S)``                           spatial (per sample and channel)
GN        ``(N, G, C // G, *S)``                   channels of a group and spatial
========  =======================================  =====================================

Every function accepts any real dtype and computes in float64. Backward functions return the analytic
gradients; for a normalization over ``m`` coefficients with ``xhat = (x - mu) * rstd``::

    dxhat = dy * gamma
    dx    = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (means over the same set S_i)
    dgamma = sum over all axes but C of dy * xhat;  dbeta = sum over all axes but C of dy

Masked GN (``mask=``, a boolean array of shape ``(N, 1, *spatial)``, True where a position is real): the
statistics of a group are taken over its real positions only (``m`` = channels of the group x real positions),
every position, padded ones too, is normalized with them, and with ``w_k`` = 1 at real positions, 0 at padded
ones (the true gradient of that function)::

    dx_k  = rstd * (dxhat_k - w_k * (sum(dxhat) + xhat_k * sum(dxhat * xhat)) / m)   (sums over all positions)

so a padded position gets only the direct term ``rstd * dxhat_k``, nothing through the statistics. Without a
mask ``w = 1`` and the sums over m are the means above.

Weight-side methods: weight normalization (Salimans & Kingma 2016), ``w = g * v / ||v||``, and weight
standardization (Qiao et al. 2019), ``w_hat = (w - mean) / sqrt(var + eps)`` over all axes but axis 0.
"""
from __future__ import annotations

import math

import numpy as np

from .args import ACTIVATIONS, check_activation, resolve_num_groups

__all__ = [
    "ACTIVATIONS",
    "activation",
    "activation_backward",
    "moments",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_update_running",
    "batch_norm_inference",
    "layer_norm",
    "layer_norm_backward",
    "instance_norm",
    "instance_norm_backward",
    "group_norm",
    "group_norm_backward",
    "group_norm_stats",
    "resolve_num_groups",
    "weight_norm",
    "weight_norm_backward",
    "weight_standardize",
    "weight_standardize_backward",
]

_erf = np.frompyfunc(math.erf, 1, 1)


# ----------------------------------------------------------------------------------------------- helpers
def _as_f64(x, name: str = "x") -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a.astype(np.float64)


def _check_input(x: np.ndarray) -> None:
    if x.ndim < 2:
        raise ValueError(f"expected an input of shape (N, C, *spatial) with rank >= 2, got shape {x.shape}")


def _channel_param(p, num_channels: int, name: str):
    if p is None:
        return None
    p = _as_f64(p, name)
    if p.shape != (num_channels,):
        raise ValueError(f"{name} must have shape ({num_channels},), got {p.shape}")
    return p


def _bcast(p: np.ndarray, ndim: int) -> np.ndarray:
    """Per-channel vector (C,) -> shape (1, C, 1, ..., 1) broadcastable against an (N, C, *S) array."""
    return p.reshape((1, -1) + (1,) * (ndim - 2))


# ----------------------------------------------------------------------------------------------- activations
def activation(y, name):
    """Elementwise activation ``z = f(y)`` for name in None (identity), "relu", "silu", "gelu" (exact, erf)."""
    y = _as_f64(y, "y")
    if name is None:
        return y
    if name == "relu":
        return np.maximum(y, 0.0)
    if name == "silu":
        return y / (1.0 + np.exp(-y))
    if name == "gelu":
        return 0.5 * y * (1.0 + _erf(y / math.sqrt(2.0)).astype(np.float64))
    check_activation(name)  # raises: name is none of the above
    raise AssertionError(f"activation {name!r} is valid but has no formula here")


def activation_backward(dz, y, name):
    """Gradient through the activation: ``dy = dz * f'(y)``, with relu'(0) = 0 as in PyTorch."""
    dz = _as_f64(dz, "dz")
    y = _as_f64(y, "y")
    if name is None:
        return dz
    if name == "relu":
        return dz * (y > 0)
    if name == "silu":
        s = 1.0 / (1.0 + np.exp(-y))
        return dz * s * (1.0 + y * (1.0 - s))
    if name == "gelu":
        cdf = 0.5 * (1.0 + _erf(y / math.sqrt(2.0)).astype(np.float64))
        pdf = np.exp(-0.5 * y * y) / math.sqrt(2.0 * math.pi)
        return dz * (cdf + y * pdf)
    check_activation(name)  # raises: name is none of the above
    raise AssertionError(f"activation {name!r} is valid but has no formula here")


# ----------------------------------------------------------------------------------------------- shared core
def moments(x, axes):
    """Mean and biased variance of ``x`` over ``axes`` (kept as size-1 dims), two-pass in float64."""
    x = _as_f64(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return mean, var


def _view_and_axes(shape, method: str, num_groups: int | None = None):
    """The view of an (N, C, *S) array in which ``method`` reduces, and the axes it reduces there."""
    n, c, spatial = shape[0], shape[1], tuple(shape[2:])
    s_axes = tuple(range(2, 2 + len(spatial)))
    if method == "bn":
        return shape, (0,) + s_axes
    if method == "ln":
        return shape, (1,) + s_axes
    if method == "in":
        return shape, s_axes
    if method == "gn":
        view = (n, num_groups, c // num_groups) + spatial
        return view, tuple(range(2, 3 + len(spatial)))
    raise ValueError(f"unknown method {method!r}")


def _mask_weights(mask, x, view):
    """The 0/1 float64 weights of a boolean ``mask`` of shape (N, 1, *spatial) for x, shaped (N, 1, 1,
    *spatial) against GN's ``view`` (N, G, C // G, *spatial); None without a mask."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array, got dtype {m.dtype}")
    want = (x.shape[0], 1) + tuple(x.shape[2:])
    if m.shape != want:
        raise ValueError(f"mask must have shape {want} (N, 1, *spatial) for an input of shape {x.shape}, "
                         f"got {m.shape}")
    empty = np.flatnonzero(~m.reshape(m.shape[0], -1).any(axis=1))
    if empty.size:
        raise ValueError(f"mask has no real (True) position in sample(s) {empty.tolist()}: their groups' "
                         f"statistics are undefined")
    if len(view) != x.ndim + 1:
        raise ValueError("a mask is defined for group norm only")
    return m.reshape((m.shape[0], 1, 1) + m.shape[2:]).astype(np.float64)


def _normalize(x, method, num_groups, eps, mask=None):
    """xhat and rstd (broadcastable to x) for ``method``, and the 0/1 mask weights in the reduction's view
    (None without a mask; a mask only for GN)."""
    view, axes = _view_and_axes(x.shape, method, num_groups)
    xv = x.reshape(view)
    w = _mask_weights(mask, x, view)
    if w is None:
        mean, var = moments(xv, axes)
    else:  # over the real positions only: m = (C // G) * (real positions) values per group
        wb = np.broadcast_to(w, xv.shape)
        count = wb.sum(axis=axes, keepdims=True)
        mean = (xv * wb).sum(axis=axes, keepdims=True) / count
        var = (((xv - mean) ** 2) * wb).sum(axis=axes, keepdims=True) / count
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = ((xv - mean) * rstd).reshape(x.shape)
    return xhat, mean, rstd, w


def _residual(residual, x):
    if residual is None:
        return None
    r = _as_f64(residual, "residual")
    if r.shape != x.shape:
        raise ValueError(f"residual has shape {r.shape} but x has shape {x.shape}")
    return r


def _forward(x, method, gamma, beta, eps, num_groups=None, act=None, residual=None, mask=None):
    x = _as_f64(x)
    _check_input(x)
    gamma = _channel_param(gamma, x.shape[1], "gamma")
    beta = _channel_param(beta, x.shape[1], "beta")
    r = _residual(residual, x)
    xhat, _, _, _ = _normalize(x, method, num_groups, eps, mask)
    y = xhat
    if gamma is not None:
        y = y * _bcast(gamma, x.ndim)
    if beta is not None:
        y = y + _bcast(beta, x.ndim)
    if r is not None:
        y = y + r
    return activation(y, act)


def _backward(dy, x, method, gamma, beta, eps, num_groups=None, act=None, residual=None, mask=None):
    """(dx, dgamma, dbeta, dv) for dy, the gradient after the activation; dv is the gradient before it (dy
    itself without an activation), which is also the residual's gradient."""
    x = _as_f64(x)
    _check_input(x)
    dy = _as_f64(dy, "dy")
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {dy.shape} but x has shape {x.shape}")
    c = x.shape[1]
    gamma = _channel_param(gamma, c, "gamma")
    beta = _channel_param(beta, c, "beta")
    r = _residual(residual, x)
    xhat, _, rstd, w = _normalize(x, method, num_groups, eps, mask)
    if act is not None:  # recompute the pre-activation output and go through the activation first
        y = xhat
        if gamma is not None:
            y = y * _bcast(gamma, x.ndim)
        if beta is not None:
            y = y + _bcast(beta, x.ndim)
        if r is not None:
            y = y + r
        dy = activation_backward(dy, y, act)
    not_c = (0,) + tuple(range(2, x.ndim))
    dgamma = (dy * xhat).sum(axis=not_c)
    dbeta = dy.sum(axis=not_c)
    dxhat = dy * _bcast(gamma, x.ndim) if gamma is not None else dy
    view, axes = _view_and_axes(x.shape, method, num_groups)
    dxh = dxhat.reshape(view)
    xh = xhat.reshape(view)
    if w is None:
        dx = rstd * (dxh - dxh.mean(axis=axes, keepdims=True) - xh * (dxh * xh).mean(axis=axes, keepdims=True))
    else:  # the sums run over every position (padded outputs depend on the statistics too), divided by m
        count = np.broadcast_to(w, dxh.shape).sum(axis=axes, keepdims=True)
        s1 = dxh.sum(axis=axes, keepdims=True) / count
        s2 = (dxh * xh).sum(axis=axes, keepdims=True) / count
        dx = rstd * (dxh - w * (s1 + xh * s2))
    return dx.reshape(x.shape), dgamma, dbeta, dy


# ----------------------------------------------------------------------------------------------- BN
def batch_norm(x, gamma=None, beta=None, eps=1e-5):
    """Batch normalization with training-mode statistics: per channel, over N and the spatial axes.

    x: (N, C, *spatial); gamma, beta: (C,) or None. Returns y of the shape of x.
    """
    return _forward(x, "bn", gamma, beta, eps)


def batch_norm_backward(dy, x, gamma=None, eps=1e-5):
    """Gradients (dx, dgamma, dbeta) of :func:`batch_norm` given dy = dL/dy."""
    return _backward(dy, x, "bn", gamma, None, eps)[:3]


def batch_norm_update_running(x, running_mean, running_var, momentum=0.1):
    """One exponential-moving-average update of BN's running statistics, PyTorch's convention.

    ``running = (1 - momentum) * running + momentum * batch``, where the batch variance is the unbiased one
    (divided by m - 1, m = N * prod(spatial)). Returns (new_mean, new_var), each of shape (C,).
    """
    x = _as_f64(x)
    _check_input(x)
    c = x.shape[1]
    m = x.size // c
    if m < 2:
        raise ValueError(f"expected more than 1 value per channel to update running statistics, got input shape {x.shape}")
    mean, var = moments(x, (0,) + tuple(range(2, x.ndim)))
    mean, var = mean.reshape(c), var.reshape(c) * m / (m - 1)
    rm = _channel_param(running_mean, c, "running_mean")
    rv = _channel_param(running_var, c, "running_var")
    return (1.0 - momentum) * rm + momentum * mean, (1.0 - momentum) * rv + momentum * var


def batch_norm_inference(x, running_mean, running_var, gamma=None, beta=None, eps=1e-5):
    """BN with given (running) statistics: ``gamma * (x - running_mean) / sqrt(running_var + eps) + beta``."""
    x = _as_f64(x)
    _check_input(x)
    c = x.shape[1]
    rm = _bcast(_channel_param(running_mean, c, "running_mean"), x.ndim)
    rv = _bcast(_channel_param(running_var, c, "running_var"), x.ndim)
    y = (x - rm) / np.sqrt(rv + eps)
    gamma = _channel_param(gamma, c, "gamma")
    beta = _channel_param(beta, c, "beta")
    if gamma is not None:
        y = y * _bcast(gamma, x.ndim)
    if beta is not None:
        y = y + _bcast(beta, x.ndim)
    return y


# ----------------------------------------------------------------------------------------------- LN, IN, GN
def layer_norm(x, gamma=None, beta=None, eps=1e-5):
    """Layer normalization over C and the spatial axes of each sample, with a per-channel affine (= GN, G=1)."""
    return _forward(x, "ln", gamma, beta, eps)


def layer_norm_backward(dy, x, gamma=None, eps=1e-5):
    """Gradients (dx, dgamma, dbeta) of :func:`layer_norm`."""
    return _backward(dy, x, "ln", gamma, None, eps)[:3]


def instance_norm(x, gamma=None, beta=None, eps=1e-5):
    """Instance normalization over the spatial axes of each (sample, channel) (= GN, G=C)."""
    return _forward(x, "in", gamma, beta, eps)


def instance_norm_backward(dy, x, gamma=None, eps=1e-5):
    """Gradients (dx, dgamma, dbeta) of :func:`instance_norm`."""
    return _backward(dy, x, "in", gamma, None, eps)[:3]


def group_norm(x, num_groups=None, gamma=None, beta=None, eps=1e-5, *, group_size=None, activation=None,
               residual=None, mask=None):
    """Group normalization (Wu & He 2018), optionally followed by an activation.

    The C channels are split into G consecutive groups of C // G channels; statistics are taken per sample
    over a group's channels and all spatial positions. Exactly one of ``num_groups`` (G) and ``group_size``
    (C // G) is given. x: (N, C, *spatial); gamma, beta: (C,) or None; residual: x's shape or None. Returns
    ``act(gamma * xhat + beta + residual)`` (a ResNet block's end: GN, the shortcut added, then ReLU).

    ``mask``: None, or a boolean array of shape (N, 1, *spatial), True where a position is real: the mean
    and variance of each group are taken over its real positions only, and every position (padded ones
    too) is normalized with them. A sample with no real position raises ValueError (its statistics are
    undefined).
    """
    x = _as_f64(x)
    _check_input(x)
    g = resolve_num_groups(x.shape[1], num_groups, group_size)
    return _forward(x, "gn", gamma, beta, eps, g, activation, residual, mask)


def group_norm_backward(dy, x, num_groups=None, gamma=None, beta=None, eps=1e-5, *, group_size=None, activation=None,
                        residual=None, mask=None):
    """Gradients (dx, dgamma, dbeta) of :func:`group_norm`, given dy = dL/d(output after the activation);
    with a residual, (dx, dgamma, dbeta, dresidual), ``dresidual = dy * act'(pre-activation)``.

    ``beta`` (and the residual) are only needed when an activation follows (to recompute its input).
    ``mask`` as in :func:`group_norm`; padded positions get no gradient through the statistics (module doc).
    """
    x = _as_f64(x)
    _check_input(x)
    g = resolve_num_groups(x.shape[1], num_groups, group_size)
    grads = _backward(dy, x, "gn", gamma, beta, eps, g, activation, residual, mask)
    return grads if residual is not None else grads[:3]


def group_norm_stats(x, num_groups, eps=1e-5, *, mask=None):
    """Per-(sample, group) mean and rstd = 1 / sqrt(var + eps), each of shape (N, G); over the real positions
    only with a ``mask`` (as in :func:`group_norm`)."""
    x = _as_f64(x)
    _check_input(x)
    g = resolve_num_groups(x.shape[1], num_groups)
    _, mean, rstd, _ = _normalize(x, "gn", g, eps, mask)
    return mean.reshape(x.shape[0], g), rstd.reshape(x.shape[0], g)


# ----------------------------------------------------------------------------------------------- weights
def _norm_axes(ndim: int, dim):
    if dim is None:
        return tuple(range(ndim))
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim={dim} is out of range for a weight of rank {ndim}")
    dim %= ndim
    return tuple(a for a in range(ndim) if a != dim)


def weight_norm(v, g, dim=0):
    """Weight normalization (Salimans & Kingma 2016): ``w = g * v / ||v||``.

    The norm is taken over all axes but ``dim`` (PyTorch's convention; ``dim=None`` means the whole tensor).
    ``g`` has ``v.shape[dim]`` entries (any shape broadcastable to the kept axis, e.g. (C_out,) or
    (C_out, 1, 1, 1)), or is a scalar when ``dim=None``. Returns w with the shape of v.
    """
    v = _as_f64(v, "v")
    axes = _norm_axes(v.ndim, dim)
    norm = np.sqrt((v * v).sum(axis=axes, keepdims=True))
    return _g_like(g, norm.shape) * v / norm


def _g_like(g, shape):
    g = _as_f64(g, "g")
    if g.size != int(np.prod(shape)):
        raise ValueError(f"g has {g.size} entries but the norm has shape {shape}")
    return g.reshape(shape)


def weight_norm_backward(dw, v, g, dim=0):
    """Gradients (dv, dg) of :func:`weight_norm`; dg has the shape of g.

    With u = v / ||v||: ``dg = sum(dw * u)`` over the normed axes and ``dv = g / ||v|| * (dw - dg * u)``.
    """
    v = _as_f64(v, "v")
    dw = _as_f64(dw, "dw")
    axes = _norm_axes(v.ndim, dim)
    norm = np.sqrt((v * v).sum(axis=axes, keepdims=True))
    u = v / norm
    gk = _g_like(g, norm.shape)
    dg = (dw * u).sum(axis=axes, keepdims=True)
    dv = gk / norm * (dw - dg * u)
    return dv, dg.reshape(np.shape(g))


def weight_standardize(w, eps=1e-5):
    """Weight standardization (Qiao et al. 2019): ``(w - mean) / sqrt(var + eps)`` per output channel.

    Mean and biased variance are taken over all axes but axis 0 (the output channels), eps inside the sqrt.
    w: (C_out, *rest) with rank >= 2. Returns w_hat with the shape of w.
    """
    w = _as_f64(w, "w")
    if w.ndim < 2:
        raise ValueError(f"weight_standardize expects a weight of rank >= 2, got shape {w.shape}")
    mean, var = moments(w, tuple(range(1, w.ndim)))
    return (w - mean) / np.sqrt(var + eps)


def weight_standardize_backward(dw_hat, w, eps=1e-5):
    """Gradient dw of :func:`weight_standardize` given dw_hat = dL/dw_hat (normalization backward, no gamma)."""
    w = _as_f64(w, "w")
    dwh = _as_f64(dw_hat, "dw_hat")
    axes = tuple(range(1, w.ndim))
    mean, var = moments(w, axes)
    rstd = 1.0 / np.sqrt(var + eps)
    what = (w - mean) * rstd
    return rstd * (dwh - dwh.mean(axis=axes, keepdims=True) - what * (dwh * what).mean(axis=axes, keepdims=True))
