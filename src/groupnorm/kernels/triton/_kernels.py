"""The Triton kernels of GroupNorm with a fused residual and activation (forward and backward).

Every tensor is addressed as ``(N, C, S)`` through three strides ``(sn, sc, ss)``, S the product of the spatial
sizes: a contiguous tensor has ``(C*S, S, 1)``, a channels-last one (2-D or 3-D) ``(S*C, 1, C)``, so both layouts
are read in place (Triton specializes a stride equal to 1, which makes the loads along it coalesced). A program
owns a tile of ``BLOCK_C`` channels of one sample and a chunk of ``chunk`` spatial positions, walked in blocks
of ``BLOCK_S``: grid ``(N, cdiv(C, BLOCK_C), cdiv(S, chunk))``. Many small groups share a tile; a large group is
split over several chunks, whose partial results a second step combines in a fixed order (deterministic: no
atomics).

Statistics (forward). Where groups are small (at most 64 channels, 2^18 values) and many (enough programs
for the GPU), :func:`gn_fwd_group` runs the whole forward of a group in one program (and :func:`gn_bwd_group`
its backward); otherwise three kernels (two, and sums in torch, for the backward).
Per (n, c, chunk) the kernel accumulates, block by block, the count, mean and sum of
squared deviations ``M2`` of ``d = x - K`` (K the first value of the group: a shift that keeps the means small,
so an input with mean 1e6 and unit variance loses nothing), each block by two passes in registers (its mean,
then its centered squares) merged with Chan's formula ``M2 = M2_a + M2_b + delta^2 n_a n_b / (n_a + n_b)``.
:func:`gn_fwd_finalize` merges the partials of a group the same way (all of them at once: the weighted mean of
the partial means, then the sum of ``M2_i + n_i (mean_i - mean)^2``), and stores ``mean = K + mean_d`` and
``rstd = 1 / sqrt(M2 / M + eps)`` in float64 (M = C/G * S). Every kernel that normalizes reads the float64 mean
as ``hi + lo`` (two float32) and forms ``xhat = ((x - hi) - lo) * rstd``, exact where ``x - hi`` is.

Backward. With ``v = w xhat + b [+ r]`` the pre-activation and ``dv = dy * act'(v)`` (recomputed from x):
:func:`gn_bwd_reduce` writes per (n, c, chunk) ``A = sum dv * xhat`` and ``B = sum dv``; from their sums over
chunks, ``dgamma_c = sum_n A[n, c]``, ``dbeta_c = sum_n B[n, c]``, ``c1 = sum_{c in g} w_c A[n, c]``,
``c2 = sum_{c in g} w_c B[n, c]``, and :func:`gn_bwd_dx` writes ``dx = rstd (w dv - (c2 + xhat c1) / M)`` and the
residual's gradient ``dv``.

Activation codes are ``groupnorm.args.ACTIVATION_CODES``: 0 none, 1 relu, 2 silu, 3 gelu (exact, erf).
All math is float32; loads of bfloat16 / float16 data are widened, stores rounded to the output's dtype.
"""
from __future__ import annotations

import triton
import triton.language as tl

_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@triton.jit
def _act(v, ACT: tl.constexpr):
    """act(v) for an activation code."""
    if ACT == 1:
        v = tl.maximum(v, 0.0)
    elif ACT == 2:
        v = v * tl.sigmoid(v)
    elif ACT == 3:
        v = 0.5 * v * (1.0 + tl.math.erf(v * _INV_SQRT2))
    return v


@triton.jit
def _act_grad(v, ACT: tl.constexpr):
    """act'(v); relu'(0) = 0 as in PyTorch."""
    if ACT == 1:
        d = tl.where(v > 0.0, 1.0, 0.0)
    elif ACT == 2:
        sg = tl.sigmoid(v)
        d = sg * (1.0 + v * (1.0 - sg))
    elif ACT == 3:
        d = 0.5 * (1.0 + tl.math.erf(v * _INV_SQRT2)) + v * _INV_SQRT_2PI * tl.exp(-0.5 * v * v)
    else:
        d = tl.full(v.shape, 1.0, tl.float32)
    return d


@triton.jit
def _tile(n, C, BLOCK_C: tl.constexpr):
    """The channels of this program's tile, their mask, and the sample index as int64."""
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return c, c < C, n.to(tl.int64)


@triton.jit
def _shift(x_ptr, n64, c, cmask, cpg, sxn, sxc):
    """K per channel: the first value (channel g * cpg, position 0) of the channel's group, as float32."""
    first = (c // cpg) * cpg
    return tl.load(x_ptr + n64 * sxn + first.to(tl.int64) * sxc, mask=cmask, other=0.0).to(tl.float32)


@triton.jit
def _stats(mean_ptr, rstd_ptr, n64, c, cmask, cpg, G):
    """The float64 mean of each channel's group as float32 ``hi + lo``, and its rstd as float32."""
    gi = n64 * G + c // cpg
    m = tl.load(mean_ptr + gi, mask=cmask, other=0.0)
    hi = m.to(tl.float32)
    lo = (m - hi.to(tl.float64)).to(tl.float32)
    rstd = tl.load(rstd_ptr + gi, mask=cmask, other=0.0).to(tl.float32)
    return hi, lo, rstd


@triton.jit
def _affine(w_ptr, b_ptr, c, cmask, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """gamma and beta of the tile's channels as float32 (1 and 0 where absent)."""
    if HAS_W:
        w = tl.load(w_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    else:
        w = tl.full(c.shape, 1.0, tl.float32)
    if HAS_B:
        b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    else:
        b = tl.zeros(c.shape, tl.float32)
    return w, b


@triton.jit
def gn_fwd_partial(x_ptr, pmean_ptr, pm2_ptr, C, S, cpg, chunk, sxn, sxc, sxs,
                   BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """Per (n, c, chunk): mean and M2 of ``x - K`` over the chunk's positions -> ``(N, n_chunks, C)`` float32."""
    n = tl.program_id(0)
    k = tl.program_id(2)
    c, cmask, n64 = _tile(n, C, BLOCK_C)
    shift = _shift(x_ptr, n64, c, cmask, cpg, sxn, sxc)
    row = x_ptr + n64 * sxn + c.to(tl.int64)[:, None] * sxc
    s_lo = k * chunk
    s_hi = tl.minimum(s_lo + chunk, S)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    cnt = 0.0
    for s0 in range(s_lo, s_hi, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        mask = cmask[:, None] & (s < s_hi)[None, :]
        xv = tl.load(row + s.to(tl.int64)[None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, xv - shift[:, None], 0.0)
        nb = tl.minimum(s_hi - s0, BLOCK_S).to(tl.float32)
        bmean = tl.sum(d, 1) / nb
        e = tl.where(mask, d - bmean[:, None], 0.0)
        bm2 = tl.sum(e * e, 1)
        tot = cnt + nb
        delta = bmean - mean
        mean += delta * (nb / tot)
        m2 += bm2 + delta * delta * (cnt * (nb / tot))
        cnt = tot
    out = (n64 * tl.num_programs(2) + k) * C + c
    tl.store(pmean_ptr + out, mean, mask=cmask)
    tl.store(pm2_ptr + out, m2, mask=cmask)


@triton.jit
def gn_fwd_finalize(x_ptr, pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, C, S, G, cpg, chunk, n_chunks, eps,
                    sxn, sxc, BLOCK_P: tl.constexpr):
    """Per (n, g), grid (N * G,): merge the group's ``cpg * n_chunks`` partials; store float64 mean and rstd."""
    pid = tl.program_id(0)
    n64 = (pid // G).to(tl.int64)
    g = pid % G
    shift = tl.load(x_ptr + n64 * sxn + (g * cpg).to(tl.int64) * sxc).to(tl.float32)
    total = cpg * n_chunks
    size = (cpg * S) * 1.0
    acc = tl.zeros([BLOCK_P], tl.float32)
    for i0 in range(0, total, BLOCK_P):
        i = i0 + tl.arange(0, BLOCK_P)
        kk = i // cpg
        m = i < total
        cnt = tl.minimum(S - kk * chunk, chunk).to(tl.float32)
        pm = tl.load(pmean_ptr + (n64 * n_chunks + kk) * C + g * cpg + i % cpg, mask=m, other=0.0)
        acc += tl.where(m, cnt * pm, 0.0)
    mean_d = tl.sum(acc, 0) / size
    acc = tl.zeros([BLOCK_P], tl.float32)
    for i0 in range(0, total, BLOCK_P):
        i = i0 + tl.arange(0, BLOCK_P)
        kk = i // cpg
        m = i < total
        cnt = tl.minimum(S - kk * chunk, chunk).to(tl.float32)
        at = (n64 * n_chunks + kk) * C + g * cpg + i % cpg
        pm = tl.load(pmean_ptr + at, mask=m, other=0.0)
        p2 = tl.load(pm2_ptr + at, mask=m, other=0.0)
        dm = pm - mean_d
        acc += tl.where(m, p2 + cnt * dm * dm, 0.0)
    var = tl.maximum(tl.sum(acc, 0) / size, 0.0)
    tl.store(mean_ptr + pid, shift.to(tl.float64) + mean_d.to(tl.float64))
    tl.store(rstd_ptr + pid, 1.0 / tl.sqrt(var.to(tl.float64) + eps))


@triton.jit
def gn_fwd_apply(x_ptr, y_ptr, r_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, C, S, G, cpg, chunk,
                 sxn, sxc, sxs, syn, syc, sys, srn, src, srs,
                 ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_R: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """``y = act(w * xhat + b [+ r])`` over the program's tile and chunk."""
    n = tl.program_id(0)
    c, cmask, n64 = _tile(n, C, BLOCK_C)
    hi, lo, rstd = _stats(mean_ptr, rstd_ptr, n64, c, cmask, cpg, G)
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B)
    c64 = c.to(tl.int64)[:, None]
    xrow = x_ptr + n64 * sxn + c64 * sxc
    yrow = y_ptr + n64 * syn + c64 * syc
    rrow = r_ptr + n64 * srn + c64 * src
    s_lo = tl.program_id(2) * chunk
    s_hi = tl.minimum(s_lo + chunk, S)
    for s0 in range(s_lo, s_hi, BLOCK_S):
        s = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)[None, :]
        mask = cmask[:, None] & (s < s_hi)
        xv = tl.load(xrow + s * sxs, mask=mask, other=0.0).to(tl.float32)
        v = ((xv - hi[:, None]) - lo[:, None]) * rstd[:, None] * w[:, None] + b[:, None]
        if HAS_R:
            v += tl.load(rrow + s * srs, mask=mask, other=0.0).to(tl.float32)
        tl.store(yrow + s * sys, _act(v, ACT).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gn_fwd_group(x_ptr, y_ptr, r_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, C, S, G, cpg, eps,
                 sxn, sxc, sxs, syn, syc, sys, srn, src, srs,
                 ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_R: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """The whole forward of one group per program, grid (N * G,), for groups of at most BLOCK_C channels:
    statistics over tiles of the group's channels x BLOCK_S positions (the same per-block two passes, shift
    and Chan merge as :func:`gn_fwd_partial`, over all of a block's values at once), then y over the same
    tiles (a second read of a group the program has just read, mostly from cache)."""
    pid = tl.program_id(0)
    n64 = (pid // G).to(tl.int64)
    g = pid % G
    cl = tl.arange(0, BLOCK_C)
    cmask = cl < cpg
    c = g * cpg + cl
    c64 = c.to(tl.int64)[:, None]
    shift = tl.load(x_ptr + n64 * sxn + (g * cpg).to(tl.int64) * sxc).to(tl.float32)
    xrow = x_ptr + n64 * sxn + c64 * sxc
    mean = 0.0
    m2 = 0.0
    cnt = 0.0
    for s0 in range(0, S, BLOCK_S):
        s = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)[None, :]
        mask = cmask[:, None] & (s < S)
        d = tl.where(mask, tl.load(xrow + s * sxs, mask=mask, other=0.0).to(tl.float32) - shift, 0.0)
        nb = (tl.minimum(S - s0, BLOCK_S) * cpg).to(tl.float32)
        bmean = tl.sum(tl.sum(d, 1), 0) / nb
        e = tl.where(mask, d - bmean, 0.0)
        bm2 = tl.sum(tl.sum(e * e, 1), 0)
        tot = cnt + nb
        delta = bmean - mean
        mean += delta * (nb / tot)
        m2 += bm2 + delta * delta * (cnt * (nb / tot))
        cnt = tot
    mean64 = shift.to(tl.float64) + mean.to(tl.float64)
    rstd64 = 1.0 / tl.sqrt(tl.maximum(m2 / cnt, 0.0).to(tl.float64) + eps)
    tl.store(mean_ptr + pid, mean64)
    tl.store(rstd_ptr + pid, rstd64)
    hi = mean64.to(tl.float32)
    lo = (mean64 - hi.to(tl.float64)).to(tl.float32)
    rstd = rstd64.to(tl.float32)
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B)
    yrow = y_ptr + n64 * syn + c64 * syc
    rrow = r_ptr + n64 * srn + c64 * src
    for s0 in range(0, S, BLOCK_S):
        s = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)[None, :]
        mask = cmask[:, None] & (s < S)
        xv = tl.load(xrow + s * sxs, mask=mask, other=0.0).to(tl.float32)
        v = ((xv - hi) - lo) * rstd * w[:, None] + b[:, None]
        if HAS_R:
            v += tl.load(rrow + s * srs, mask=mask, other=0.0).to(tl.float32)
        tl.store(yrow + s * sys, _act(v, ACT).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gn_bwd_reduce(dy_ptr, x_ptr, r_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, pa_ptr, pb_ptr, C, S, G, cpg, chunk,
                  sdn, sdc, sds, sxn, sxc, sxs, srn, src, srs,
                  ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_R: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """Per (n, c, chunk): ``A = sum dv * xhat`` and ``B = sum dv`` -> ``(N, n_chunks, C)`` float32."""
    n = tl.program_id(0)
    k = tl.program_id(2)
    c, cmask, n64 = _tile(n, C, BLOCK_C)
    hi, lo, rstd = _stats(mean_ptr, rstd_ptr, n64, c, cmask, cpg, G)
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B)
    c64 = c.to(tl.int64)[:, None]
    xrow = x_ptr + n64 * sxn + c64 * sxc
    drow = dy_ptr + n64 * sdn + c64 * sdc
    rrow = r_ptr + n64 * srn + c64 * src
    s_lo = k * chunk
    s_hi = tl.minimum(s_lo + chunk, S)
    acc_a = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
    acc_b = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
    for s0 in range(s_lo, s_hi, BLOCK_S):
        s = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)[None, :]
        mask = cmask[:, None] & (s < s_hi)
        xv = tl.load(xrow + s * sxs, mask=mask, other=0.0).to(tl.float32)
        dv = tl.load(drow + s * sds, mask=mask, other=0.0).to(tl.float32)
        xhat = ((xv - hi[:, None]) - lo[:, None]) * rstd[:, None]
        if ACT != 0:
            v = xhat * w[:, None] + b[:, None]
            if HAS_R:
                v += tl.load(rrow + s * srs, mask=mask, other=0.0).to(tl.float32)
            dv *= _act_grad(v, ACT)
        acc_a += tl.where(mask, dv * xhat, 0.0)
        acc_b += dv
    out = (n64 * tl.num_programs(2) + k) * C + c
    tl.store(pa_ptr + out, tl.sum(acc_a, 1), mask=cmask)
    tl.store(pb_ptr + out, tl.sum(acc_b, 1), mask=cmask)


@triton.jit
def gn_bwd_dx(dy_ptr, x_ptr, r_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, c1_ptr, c2_ptr, dx_ptr, dr_ptr,
              C, S, G, cpg, chunk,
              sdn, sdc, sds, sxn, sxc, sxs, srn, src, srs, son, soc, sos,
              ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_R: tl.constexpr,
              NEED_DX: tl.constexpr, NEED_DR: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """``dx = rstd (w dv - (c2 + xhat c1) / M)`` (c1, c2 given already divided by M) and ``dr = dv``; dx and dr
    share the strides ``(son, soc, sos)``."""
    n = tl.program_id(0)
    c, cmask, n64 = _tile(n, C, BLOCK_C)
    hi, lo, rstd = _stats(mean_ptr, rstd_ptr, n64, c, cmask, cpg, G)
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B)
    gi = n64 * G + c // cpg
    c1 = tl.load(c1_ptr + gi, mask=cmask, other=0.0)[:, None]
    c2 = tl.load(c2_ptr + gi, mask=cmask, other=0.0)[:, None]
    c64 = c.to(tl.int64)[:, None]
    xrow = x_ptr + n64 * sxn + c64 * sxc
    drow = dy_ptr + n64 * sdn + c64 * sdc
    rrow = r_ptr + n64 * srn + c64 * src
    orow = n64 * son + c64 * soc
    s_lo = tl.program_id(2) * chunk
    s_hi = tl.minimum(s_lo + chunk, S)
    for s0 in range(s_lo, s_hi, BLOCK_S):
        s = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)[None, :]
        mask = cmask[:, None] & (s < s_hi)
        xv = tl.load(xrow + s * sxs, mask=mask, other=0.0).to(tl.float32)
        dv = tl.load(drow + s * sds, mask=mask, other=0.0).to(tl.float32)
        xhat = ((xv - hi[:, None]) - lo[:, None]) * rstd[:, None]
        if ACT != 0:
            v = xhat * w[:, None] + b[:, None]
            if HAS_R:
                v += tl.load(rrow + s * srs, mask=mask, other=0.0).to(tl.float32)
            dv *= _act_grad(v, ACT)
        if NEED_DR:
            tl.store(dr_ptr + orow + s * sos, dv.to(dr_ptr.dtype.element_ty), mask=mask)
        if NEED_DX:
            dx = rstd[:, None] * (w[:, None] * dv - (c2 + xhat * c1))
            tl.store(dx_ptr + orow + s * sos, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gn_bwd_group(dy_ptr, x_ptr, r_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, pa_ptr, pb_ptr, dx_ptr, dr_ptr,
                 C, S, G, cpg, sdn, sdc, sds, sxn, sxc, sxs, srn, src, srs, son, soc, sos,
                 ACT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_R: tl.constexpr,
                 NEED_DX: tl.constexpr, NEED_DR: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """The whole backward of one group per program, grid (N * G,), for groups of at most BLOCK_C channels:
    per channel ``A = sum dv * xhat`` and ``B = sum dv`` (stored as ``(N, 1, C)``, as :func:`gn_bwd_reduce`
    does with one chunk), ``c1``, ``c2`` from them, then dx and dr as :func:`gn_bwd_dx` writes them."""
    pid = tl.program_id(0)
    n64 = (pid // G).to(tl.int64)
    g = pid % G
    cl = tl.arange(0, BLOCK_C)
    cmask = cl < cpg
    c = g * cpg + cl
    c64 = c.to(tl.int64)[:, None]
    m = tl.load(mean_ptr + pid)
    hi = m.to(tl.float32)
    lo = (m - hi.to(tl.float64)).to(tl.float32)
    rstd = tl.load(rstd_ptr + pid).to(tl.float32)
    w, b = _affine(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B)
    w = tl.where(cmask, w, 0.0)
    xrow = x_ptr + n64 * sxn + c64 * sxc
    drow = dy_ptr + n64 * sdn + c64 * sdc
    rrow = r_ptr + n64 * srn + c64 * src
    acc_a = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
    acc_b = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
    for s0 in range(0, S, BLOCK_S):
        s = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)[None, :]
        mask = cmask[:, None] & (s < S)
        xv = tl.load(xrow + s * sxs, mask=mask, other=0.0).to(tl.float32)
        dv = tl.load(drow + s * sds, mask=mask, other=0.0).to(tl.float32)
        xhat = ((xv - hi) - lo) * rstd
        if ACT != 0:
            v = xhat * w[:, None] + b[:, None]
            if HAS_R:
                v += tl.load(rrow + s * srs, mask=mask, other=0.0).to(tl.float32)
            dv *= _act_grad(v, ACT)
        acc_a += tl.where(mask, dv * xhat, 0.0)
        acc_b += dv
    a = tl.sum(acc_a, 1)
    bsum = tl.sum(acc_b, 1)
    tl.store(pa_ptr + n64 * C + c, a, mask=cmask)
    tl.store(pb_ptr + n64 * C + c, bsum, mask=cmask)
    if NEED_DX or NEED_DR:
        size = (cpg * S) * 1.0
        c1 = tl.sum(w * a, 0) / size
        c2 = tl.sum(w * bsum, 0) / size
        orow = n64 * son + c64 * soc
        for s0 in range(0, S, BLOCK_S):
            s = (s0 + tl.arange(0, BLOCK_S)).to(tl.int64)[None, :]
            mask = cmask[:, None] & (s < S)
            xv = tl.load(xrow + s * sxs, mask=mask, other=0.0).to(tl.float32)
            dv = tl.load(drow + s * sds, mask=mask, other=0.0).to(tl.float32)
            xhat = ((xv - hi) - lo) * rstd
            if ACT != 0:
                v = xhat * w[:, None] + b[:, None]
                if HAS_R:
                    v += tl.load(rrow + s * srs, mask=mask, other=0.0).to(tl.float32)
                dv *= _act_grad(v, ACT)
            if NEED_DR:
                tl.store(dr_ptr + orow + s * sos, dv.to(dr_ptr.dtype.element_ty), mask=mask)
            if NEED_DX:
                dx = rstd * (w[:, None] * dv - (c2 + xhat * c1))
                tl.store(dx_ptr + orow + s * sos, dx.to(dx_ptr.dtype.element_ty), mask=mask)
