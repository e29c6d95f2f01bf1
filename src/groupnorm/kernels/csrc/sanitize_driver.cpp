/* Test driver for the kernels under -fsanitize=address,undefined (built and run by tests/test_kernels_sanitize.py,
 * not part of the package build). Every buffer is its own exact-size heap allocation, so any out-of-bounds
 * read or write is reported by AddressSanitizer. It runs the kernel test grid (layouts, dtypes, activations,
 * ranks, group sizes, odd sizes, with and without affine and a residual, optional outputs left NULL, 1 and 2
 * threads, every compiled instruction-set level the CPU runs), checks values against a naive double implementation, and
 * checks that invalid arguments return an error code. Prints "OK <cases>" and exits 0 on success.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gn_api.h"

static int fails = 0;

/* gn_forward / gn_backward with the arguments spelled out (their order as in the structs' fields) */
static int fwd(int dt, int layout, int64_t N, int64_t C, int64_t S, int64_t G, const void *x, const void *w,
               const void *b, const void *r, double eps, int act, void *y, double *mean, double *rstd, int nt) {
    gn_fwd_args a;
    a.sh.dtype = dt; a.sh.layout = layout; a.sh.act = act; a.sh.nthreads = nt;
    a.sh.N = N; a.sh.C = C; a.sh.S = S; a.sh.G = G;
    a.eps = eps; a.x = x; a.w = w; a.b = b; a.r = r; a.y = y; a.mean = mean; a.rstd = rstd;
    return gn_forward(&a);
}
static int bwd(int dt, int layout, int64_t N, int64_t C, int64_t S, int64_t G, const void *dy, const void *x,
               const void *r, void *dr, const double *mean, const double *rstd, const void *w, const void *b, int act,
               void *dx, void *dw, void *db, int nt) {
    gn_bwd_args a;
    a.sh.dtype = dt; a.sh.layout = layout; a.sh.act = act; a.sh.nthreads = nt;
    a.sh.N = N; a.sh.C = C; a.sh.S = S; a.sh.G = G;
    a.dy = dy; a.x = x; a.r = r; a.dr = dr; a.mean = mean; a.rstd = rstd; a.w = w; a.b = b;
    a.dx = dx; a.dw = dw; a.db = db;
    return gn_backward(&a);
}

static size_t dsize(int dt) { return dt == GN_F32 ? 4 : dt == GN_F64 ? 8 : 2; }

static double get(const void *p, int dt, int64_t i) {
    switch (dt) {
    case GN_F32: return ((const float *)p)[i];
    case GN_F64: return ((const double *)p)[i];
    case GN_BF16: {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    default: return (double)(float)((const _Float16 *)p)[i];
    }
}
static void put(void *p, int dt, int64_t i, double v) {
    switch (dt) {
    case GN_F32: ((float *)p)[i] = (float)v; break;
    case GN_F64: ((double *)p)[i] = v; break;
    case GN_BF16: {
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, 4);
        ((uint16_t *)p)[i] = (uint16_t)(u >> 16);  /* truncation: any bf16 value will do as input */
        break;
    }
    default: ((_Float16 *)p)[i] = (_Float16)v;
    }
}

static double act_f(int a, double v) {
    if (a == GN_ACT_RELU) return v > 0 ? v : 0;
    if (a == GN_ACT_SILU) return v / (1 + exp(-v));
    if (a == GN_ACT_GELU) return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    return v;
}
static double act_d(int a, double v) {
    if (a == GN_ACT_RELU) return v > 0 ? 1 : 0;
    if (a == GN_ACT_SILU) { double s = 1 / (1 + exp(-v)); return s * (1 + v * (1 - s)); }
    if (a == GN_ACT_GELU) return 0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI);
    return 1;
}

static uint64_t rng = 88172645463325252ull;
static double urand(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (double)(rng >> 11) / 9007199254740992.0; }

static void *alloc(size_t n) { void *p = malloc(n ? n : 1); if (!p) { fprintf(stderr, "malloc failed\n"); exit(3); } return p; }

/* index of (n, c, s) in a layout */
static int64_t idx(int layout, int64_t C, int64_t S, int64_t n, int64_t c, int64_t s) {
    return layout == GN_LAYOUT_NCS ? (n * C + c) * S + s : (n * S + s) * C + c;
}

static void check(const char *what, double got, double ref, double tol, const char *ctx) {
    if (!(fabs(got - ref) <= tol * (1 + fabs(ref)))) {
        if (fails < 20) fprintf(stderr, "MISMATCH %s %s: got %.9g ref %.9g\n", ctx, what, got, ref);
        ++fails;
    }
}

static void run_case(int dt, int layout, int64_t N, int64_t C, int64_t S, int64_t G, int act, int affine, int nt,
                     int mask, int res) {
    char ctx[180];
    snprintf(ctx, sizeof ctx, "dt=%d layout=%d N=%lld C=%lld S=%lld G=%lld act=%d affine=%d nt=%d mask=%d res=%d", dt,
             layout, (long long)N, (long long)C, (long long)S, (long long)G, act, affine, nt, mask, res);
    const int64_t T = N * C * S, D = C / G;
    const size_t es = dsize(dt);
    void *x = alloc(T * es), *y = alloc(T * es), *dy = alloc(T * es);
    void *w = affine ? alloc(C * es) : NULL, *b = affine ? alloc(C * es) : NULL;
    void *dx = (mask & 1) ? alloc(T * es) : NULL;
    void *dw = (affine && (mask & 2)) ? alloc(C * es) : NULL, *db = (affine && (mask & 4)) ? alloc(C * es) : NULL;
    double *mean = (double *)alloc(N * G * 8), *rstd = (double *)alloc(N * G * 8);
    void *r = res ? alloc(T * es) : NULL, *dr = (res && act != GN_ACT_NONE) ? alloc(T * es) : NULL;
    for (int64_t i = 0; i < T; ++i) { put(x, dt, i, 3 * urand() - 1); put(dy, dt, i, 2 * urand() - 1); }
    for (int64_t i = 0; r && i < T; ++i) put(r, dt, i, 2 * urand() - 1);
    for (int64_t c = 0; affine && c < C; ++c) { put(w, dt, c, 0.5 + urand()); put(b, dt, c, urand() - 0.5); }
    const double eps = 1e-5;
    const double tol = dt == GN_F64 ? 1e-9 : dt == GN_F32 ? 1e-4 : dt == GN_BF16 ? 3e-2 : 5e-3;
    int rc = fwd(dt, layout, N, C, S, G, x, w, b, r, eps, act, y, mean, rstd, nt);
    if (rc) { fprintf(stderr, "forward rc=%d %s\n", rc, ctx); ++fails; }
    { /* statistics not wanted (mean = rstd = NULL): the same y, bit for bit */
        void *y2 = alloc(T * es);
        rc = fwd(dt, layout, N, C, S, G, x, w, b, r, eps, act, y2, NULL, NULL, nt);
        if (rc || memcmp(y, y2, T * es)) { fprintf(stderr, "forward without stats rc=%d differs %s\n", rc, ctx); ++fails; }
        free(y2);
    }
    rc = bwd(dt, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, act, dx, dw, db, nt);
    if (rc) { fprintf(stderr, "backward rc=%d %s\n", rc, ctx); ++fails; }
    double *rdw = (double *)calloc(C, 8), *rdb = (double *)calloc(C, 8);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t g = 0; g < G; ++g) {
            double m = 0, v = 0, M = (double)(D * S);
            for (int64_t c = g * D; c < (g + 1) * D; ++c)
                for (int64_t s = 0; s < S; ++s) m += get(x, dt, idx(layout, C, S, n, c, s));
            m /= M;
            for (int64_t c = g * D; c < (g + 1) * D; ++c)
                for (int64_t s = 0; s < S; ++s) { double d = get(x, dt, idx(layout, C, S, n, c, s)) - m; v += d * d; }
            double rs = 1 / sqrt(v / M + eps), sa = 0, sb = 0;
            /* float lanes (sequential float sums in an unvectorized build) for all but fp64 */
            check("mean", mean[n * G + g], m, dt == GN_F64 ? 1e-9 : 1e-5, ctx);
            check("rstd", rstd[n * G + g], rs, 1e-5, ctx);
            for (int64_t c = g * D; c < (g + 1) * D; ++c) {
                double wc = affine ? get(w, dt, c) : 1, bc = affine ? get(b, dt, c) : 0;
                for (int64_t s = 0; s < S; ++s) {
                    int64_t i = idx(layout, C, S, n, c, s);
                    double xh = (get(x, dt, i) - m) * rs, pre = xh * wc + bc + (r ? get(r, dt, i) : 0.0);
                    check("y", get(y, dt, i), act_f(act, pre), tol, ctx);
                    double dv = get(dy, dt, i) * act_d(act, pre);
                    if (dr) check("dr", get(dr, dt, i), dv, tol, ctx);
                    sa += wc * dv;
                    sb += wc * dv * xh;
                    rdw[c] += dv * xh;
                    rdb[c] += dv;
                }
            }
            for (int64_t c = g * D; dx && c < (g + 1) * D; ++c) {
                double wc = affine ? get(w, dt, c) : 1, bc = affine ? get(b, dt, c) : 0;
                for (int64_t s = 0; s < S; ++s) {
                    int64_t i = idx(layout, C, S, n, c, s);
                    double xh = (get(x, dt, i) - m) * rs, pre = xh * wc + bc + (r ? get(r, dt, i) : 0.0);
                    double dv = get(dy, dt, i) * act_d(act, pre);
                    double ref = rs * (wc * dv - sa / M - xh * sb / M);
                    check("dx", get(dx, dt, i), ref, tol * (1 + rs), ctx);
                }
            }
        }
    for (int64_t c = 0; c < C; ++c) {
        if (dw) check("dw", get(dw, dt, c), rdw[c], tol * (N * S), ctx);
        if (db) check("db", get(db, dt, c), rdb[c], tol * (N * S), ctx);
    }
    free(rdw); free(rdb);
    free(x); free(y); free(dy); free(w); free(b); free(dx); free(dw); free(db); free(mean); free(rstd);
    free(r); free(dr);
}

static void check_errors(void) {
    float buf[64] = {0};
    double m[8], r[8];
    int bad = 0;
    bad += fwd(GN_F32, 0, 1, 4, 2, 3, buf, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, r, 1) != GN_EINVAL;  /* 3 !| 4 */
    bad += fwd(GN_F32, 0, 0, 4, 2, 2, buf, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, r, 1) != GN_EINVAL;  /* N = 0 */
    bad += fwd(GN_F32, 0, 1, 4, 0, 2, buf, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, r, 1) != GN_EINVAL;  /* S = 0 */
    bad += fwd(7, 0, 1, 4, 2, 2, buf, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, r, 1) != GN_EINVAL;       /* dtype */
    bad += fwd(GN_F32, 2, 1, 4, 2, 2, buf, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, r, 1) != GN_EINVAL;  /* layout */
    bad += fwd(GN_F32, 0, 1, 4, 2, 2, buf, NULL, NULL, NULL, 1e-5, 9, buf + 16, m, r, 1) != GN_EINVAL;  /* act */
    bad += fwd(GN_F32, 0, 1, 4, 2, 2, buf, NULL, NULL, NULL, -1.0, 0, buf + 16, m, r, 1) != GN_EINVAL;  /* eps */
    bad += fwd(GN_F32, 0, 1, 4, 2, 2, NULL, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, r, 1) != GN_EINVAL; /* x */
    bad += fwd(GN_F32, 0, 1, 4, 2, 2, buf, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, NULL, 1) != GN_EINVAL; /* rstd */
    bad += fwd(GN_F32, 0, 1, 4, 2, 2, buf, NULL, NULL, NULL, 1e-5, 0, buf + 16, m, r, 0) != GN_EINVAL;  /* threads */
    bad += fwd(GN_F32, 0, (int64_t)1 << 40, (int64_t)1 << 20, 4, 1, buf, NULL, NULL, NULL, 1e-5, 0, buf, m, r, 1) !=
           GN_EINVAL; /* overflow */
    bad += bwd(GN_F32, 0, 1, 4, 2, 3, buf, buf, NULL, NULL, m, r, NULL, NULL, 0, buf + 16, NULL, NULL, 1) !=
           GN_EINVAL;
    /* a residual with an activation needs dr (and dr needs the residual) */
    bad += bwd(GN_F32, 0, 1, 4, 2, 2, buf, buf, buf + 8, NULL, m, r, NULL, NULL, 1, buf + 16, NULL, NULL, 1) !=
           GN_EINVAL;
    bad += bwd(GN_F32, 0, 1, 4, 2, 2, buf, buf, NULL, buf + 8, m, r, NULL, NULL, 2, buf + 16, NULL, NULL, 1) !=
           GN_EINVAL;
    bad += gn_set_isa(99) >= 0;
    bad += gn_forward(NULL) != GN_EINVAL;
    bad += gn_backward(NULL) != GN_EINVAL;
    bad += gn_abi_version() != GN_ABI_VERSION;
    if (bad) { fprintf(stderr, "%d invalid-argument checks did not return GN_EINVAL\n", bad); fails += bad; }
}

int main(void) {
    /* (N, C, S, G): C/G in {1, 2, 3, 16, 64}, odd sizes, N = 1, S = 1, long rows (several flush blocks) */
    static const int64_t shapes[][4] = {
        {2, 6, 1, 3}, {3, 12, 1, 4}, {1, 64, 33, 1}, {2, 32, 35, 2}, {2, 5, 99, 5}, {1, 48, 51, 16},
        {2, 6, 105, 3}, {1, 64, 30, 4}, {1, 3, 2100, 1}, {2, 16, 161, 8}, {1, 8, 4097, 2},
    };
    static const int isas[] = {GN_ISA_BASE, GN_ISA_AVX2, GN_ISA_AVX512, GN_ISA_AVX512BF16};
    int cases = 0;
    check_errors();
    for (int li = 0; li < 4; ++li) {
        if (gn_set_isa(isas[li]) != isas[li]) continue; /* not linked in, or not supported by this CPU */
        for (int dt = 0; dt < 4; ++dt)
            for (int layout = 0; layout < 2; ++layout)
                for (int act = 0; act < 4; ++act)
                    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
                        const int64_t *sh = shapes[si];
                        int affine = (int)((si + act) % 3 != 0), nt = 1 + (int)(si % 2), mask = 7;
                        if (si == 3) mask = 1;      /* dx only */
                        if (si == 4) mask = 6;      /* dw, db only (no dx) */
                        const int res = (int)((si + (size_t)act) % 2); /* half the cases with a residual */
                        run_case(dt, layout, sh[0], sh[1], sh[2], sh[3], act, affine, nt, mask, res);
                        ++cases;
                    }
        /* small caches: channels-last chunks of FLUSH rows, non-temporal stores for outputs over 16 KiB per
         * thread (then the detected sizes again) */
        gn_set_cache_sizes(4096, 16384, 65536);
        for (int dt = 0; dt < 4; ++dt)
            for (int layout = 0; layout < 2; ++layout) {
                run_case(dt, layout, 1, 32, 300, 8, GN_ACT_SILU, 1, 2, 7, 1);
                run_case(dt, layout, 8, 48, 130, 16, GN_ACT_NONE, 1, 2, 7, 0);
                cases += 2;
            }
        /* long outputs with non-temporal stores (AVX-512 levels), rows of 65537 values (unaligned) */
        for (int layout = 0; layout < 2; ++layout) {
            run_case(GN_F32, layout, 1, 32, 65537, 4, GN_ACT_SILU, 1, 2, 7, 0);
            run_case(GN_BF16, layout, 2, 32, 65537, 8, GN_ACT_NONE, 1, 2, 7, 0);
            run_case(GN_F32, layout, 1, 32, 65537, 4, GN_ACT_RELU, 1, 2, 7, 1);
            cases += 3;
        }
        gn_set_cache_sizes(0, 0, 0);
    }
    if (fails) { fprintf(stderr, "FAILED: %d mismatches in %d cases\n", fails, cases); return 1; }
    printf("OK %d\n", cases);
    return 0;
}
