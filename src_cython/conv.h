/* im2col / col2im for channels-last (NHWC) convolution, the hot copy loops of conv.pyx, in C so
 * that gcc vectorises them (and clones them for AVX2 / AVX-512, see simd.h).
 *
 * A column-matrix row holds one output position's receptive field in (i, j, c) order: kernel row
 * i is one contiguous run of kw * C input values, copied as such; the parts of a run that fall in
 * the zero padding are written as zeros (the padded input is never built).
 * Rows are addressed by "global output row" g = n * Ho + oh (each has Wo output positions), so a
 * block of rows may span images.
 */
#ifndef FNN_CONV_H
#define FNN_CONV_H
#include <stddef.h>
#include "simd.h"
#include "bgemm.h"

typedef struct {
    ptrdiff_t N, H, W, C, M, kh, kw, sh, sw, ph, pw, Ho, Wo, K;
} fnn_conv_geom;

/* Valid kernel columns [*jlo, *jhi) of the window starting at input column iw0. */
static inline void fnn_conv_cols(const fnn_conv_geom *g, ptrdiff_t iw0, ptrdiff_t *jlo,
                                 ptrdiff_t *jhi) {
    ptrdiff_t lo = iw0 < 0 ? -iw0 : 0;
    ptrdiff_t hi = g->W - iw0 < g->kw ? g->W - iw0 : g->kw;
    if (lo > g->kw) lo = g->kw;
    if (hi < lo) hi = lo;
    *jlo = lo;
    *jhi = hi;
}

/* col[r * Wo + ow, :] <- receptive field of output (n, oh, ow), g0 + r = n Ho + oh, r < rows. */
#define FNN_IM2COL(T, SUF)                                                                        \
FNN_CLONES static void fnn_im2col_##SUF(const T *X, T *col, const fnn_conv_geom *g, ptrdiff_t g0, \
                                        ptrdiff_t rows) {                                         \
    const ptrdiff_t C = g->C, run = g->kw * g->C;                                                 \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                        \
        const ptrdiff_t n = (g0 + r) / g->Ho, oh = (g0 + r) - n * g->Ho;                          \
        const T *img = X + n * g->H * g->W * C;                                                   \
        T *dst = col + r * g->Wo * g->K;                                                          \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++) {                                                \
            const ptrdiff_t iw0 = ow * g->sw - g->pw;                                             \
            ptrdiff_t jlo, jhi;                                                                   \
            fnn_conv_cols(g, iw0, &jlo, &jhi);                                                    \
            const ptrdiff_t a = jlo * C, b = jhi * C;                                             \
            for (ptrdiff_t i = 0; i < g->kh; i++, dst += run) {                                   \
                const ptrdiff_t ih = oh * g->sh - g->ph + i;                                      \
                if (ih < 0 || ih >= g->H || a == b) {                                             \
                    for (ptrdiff_t k = 0; k < run; k++) dst[k] = (T)0;                            \
                    continue;                                                                     \
                }                                                                                 \
                const T *src = img + (ih * g->W + iw0 + jlo) * C;                                 \
                for (ptrdiff_t k = 0; k < a; k++) dst[k] = (T)0;                                  \
                T *d = dst + a;                                                                   \
                for (ptrdiff_t k = 0; k < b - a; k++) d[k] = src[k];                              \
                for (ptrdiff_t k = b; k < run; k++) dst[k] = (T)0;                                \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}
FNN_IM2COL(float, f32)
FNN_IM2COL(double, f64)

/* dX[n] += column gradients of output rows g0 .. g0 + rows (the adjoint of im2col). The images
 * touched must be owned by the calling thread. */
#define FNN_COL2IM(T, SUF)                                                                        \
FNN_CLONES static void fnn_col2im_##SUF(const T *col, T *dX, const fnn_conv_geom *g, ptrdiff_t g0, \
                                        ptrdiff_t rows) {                                         \
    const ptrdiff_t C = g->C, run = g->kw * g->C;                                                 \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                        \
        const ptrdiff_t n = (g0 + r) / g->Ho, oh = (g0 + r) - n * g->Ho;                          \
        T *img = dX + n * g->H * g->W * C;                                                        \
        const T *src = col + r * g->Wo * g->K;                                                    \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++, src += g->K) {                                   \
            const ptrdiff_t iw0 = ow * g->sw - g->pw;                                             \
            ptrdiff_t jlo, jhi;                                                                   \
            fnn_conv_cols(g, iw0, &jlo, &jhi);                                                    \
            const ptrdiff_t a = jlo * C, L = (jhi - jlo) * C;                                     \
            if (L == 0) continue;                                                                 \
            for (ptrdiff_t i = 0; i < g->kh; i++) {                                               \
                const ptrdiff_t ih = oh * g->sh - g->ph + i;                                      \
                if (ih < 0 || ih >= g->H) continue;                                               \
                T *d = img + (ih * g->W + iw0 + jlo) * C;                                         \
                const T *s = src + i * run + a;                                                   \
                for (ptrdiff_t k = 0; k < L; k++) d[k] += s[k];                                   \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}
FNN_COL2IM(float, f32)
FNN_COL2IM(double, f64)
/* ---- bias rows: every row of Z (rows x M, contiguous) = b ----------------------------------- */
#define FNN_BIAS_ROWS(T, SUF)                                                                     \
FNN_CLONES static void fnn_bias_rows_##SUF(T *Z, ptrdiff_t rows, ptrdiff_t M, const T *b) {       \
    for (ptrdiff_t r = 0; r < rows; r++, Z += M)                                                  \
        for (ptrdiff_t m = 0; m < M; m++) Z[m] = b[m];                                            \
}
FNN_BIAS_ROWS(float, f32)
FNN_BIAS_ROWS(double, f64)

/* ---- direct convolution, for a small receptive field K = kh kw C (im2col + GEMM is slow there:
 * GEMM with an inner dimension of ~9 runs far below peak, and im2col copies runs of a few values).
 * A[p, m] = b[m] + sum over taps (i, j, c), in that order, of X[tap] W[(i kw + j) C + c, m].
 * The output channels are processed in blocks held in registers: gcc vector types of 32 bytes
 * (lowered to two SSE registers in the baseline clone), 4 of them (32 floats / 16 doubles) per
 * block, then single vectors, then scalars. The order of every sum is the same for all blocks. */
typedef float fnn_v8f __attribute__((vector_size(32), aligned(4)));
typedef double fnn_v4d __attribute__((vector_size(32), aligned(8)));

#define FNN_TAP_LOOP(T, BODY)                                                                        \
    for (ptrdiff_t i = 0; i < g->kh; i++) {                                                       \
        const ptrdiff_t ih = oh * g->sh - g->ph + i;                                              \
        if (ih < 0 || ih >= g->H) continue;                                                       \
        const T *x = img + (ih * g->W + iw0 + jlo) * C;                                           \
        const T *w = Wt + ((i * g->kw + jlo) * C) * M + m0;                                       \
        for (ptrdiff_t t = 0; t < (jhi - jlo) * C; t++, w += M) {                                 \
            const T xv = x[t];                                                                    \
            BODY                                                                                  \
        }                                                                                         \
    }

#define FNN_CONV_DIRECT(T, SUF, V, VL)                                                            \
FNN_CLONES static void fnn_conv_direct_##SUF(const T *restrict X, const T *restrict Wt,           \
                                             const T *restrict b, T *restrict A,                  \
                                             const fnn_conv_geom *g, ptrdiff_t g0,                \
                                             ptrdiff_t rows) {                                    \
    const ptrdiff_t C = g->C, M = g->M;                                                           \
    const int pairs = M % (4 * (VL)) == 0;                          \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                        \
        const ptrdiff_t n = (g0 + r) / g->Ho, oh = (g0 + r) - n * g->Ho;                          \
        const T *img = X + n * g->H * g->W * C;                                                   \
        T *out = A + (g0 + r) * g->Wo * M;                                                        \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++, out += M) {                                      \
            const ptrdiff_t iw0 = ow * g->sw - g->pw;                                             \
            ptrdiff_t jlo, jhi, m0 = 0;                                                           \
            fnn_conv_cols(g, iw0, &jlo, &jhi);                                                    \
            if (pairs && iw0 >= 0 && ow + 1 < g->Wo && iw0 + g->sw + g->kw <= g->W) {             \
                /* two interior positions at once: each tap's weights are loaded once for     */  \
                /* both, 8 independent accumulators (same sum order as one at a time)         */  \
                const T *x0 = img + iw0 * C, *x1 = img + (iw0 + g->sw) * C;                       \
                for (; m0 < M; m0 += 4 * (VL)) {                                                  \
                    V a0 = *(const V *)(b + m0), a1 = *(const V *)(b + m0 + (VL));                \
                    V a2 = *(const V *)(b + m0 + 2 * (VL)), a3 = *(const V *)(b + m0 + 3 * (VL)); \
                    V c0 = a0, c1 = a1, c2 = a2, c3 = a3;                                         \
                    for (ptrdiff_t i = 0; i < g->kh; i++) {                                       \
                        const ptrdiff_t ih = oh * g->sh - g->ph + i;                              \
                        if (ih < 0 || ih >= g->H) continue;                                       \
                        const T *xa = x0 + ih * g->W * C, *xb = x1 + ih * g->W * C;               \
                        const T *w = Wt + (i * g->kw * C) * M + m0;                               \
                        for (ptrdiff_t t = 0; t < g->kw * C; t++, w += M) {                       \
                            const V w0 = *(const V *)w, w1 = *(const V *)(w + (VL));              \
                            const V w2 = *(const V *)(w + 2 * (VL));                              \
                            const V w3 = *(const V *)(w + 3 * (VL));                              \
                            const T xv = xa[t], yv = xb[t];                                       \
                            a0 += xv * w0; a1 += xv * w1; a2 += xv * w2; a3 += xv * w3;           \
                            c0 += yv * w0; c1 += yv * w1; c2 += yv * w2; c3 += yv * w3;           \
                        }                                                                         \
                    }                                                                             \
                    *(V *)(out + m0) = a0; *(V *)(out + m0 + (VL)) = a1;                          \
                    *(V *)(out + m0 + 2 * (VL)) = a2; *(V *)(out + m0 + 3 * (VL)) = a3;           \
                    *(V *)(out + M + m0) = c0; *(V *)(out + M + m0 + (VL)) = c1;                  \
                    *(V *)(out + M + m0 + 2 * (VL)) = c2; *(V *)(out + M + m0 + 3 * (VL)) = c3;   \
                }                                                                                 \
                ow++;                                                                             \
                out += M;                                                                         \
                continue;                                                                         \
            }                                                                                     \
            for (; m0 + 4 * (VL) <= M; m0 += 4 * (VL)) {                                          \
                V a0 = *(const V *)(b + m0), a1 = *(const V *)(b + m0 + (VL));                    \
                V a2 = *(const V *)(b + m0 + 2 * (VL)), a3 = *(const V *)(b + m0 + 3 * (VL));     \
                FNN_TAP_LOOP(T, a0 += xv * *(const V *)w; a1 += xv * *(const V *)(w + (VL));         \
                             a2 += xv * *(const V *)(w + 2 * (VL));                               \
                             a3 += xv * *(const V *)(w + 3 * (VL));)                              \
                *(V *)(out + m0) = a0; *(V *)(out + m0 + (VL)) = a1;                              \
                *(V *)(out + m0 + 2 * (VL)) = a2; *(V *)(out + m0 + 3 * (VL)) = a3;               \
            }                                                                                     \
            for (; m0 + (VL) <= M; m0 += (VL)) {                                                  \
                V a0 = *(const V *)(b + m0);                                                      \
                FNN_TAP_LOOP(T, a0 += xv * *(const V *)w;)                                           \
                *(V *)(out + m0) = a0;                                                            \
            }                                                                                     \
            for (; m0 < M; m0++) {                                                                \
                T a0 = b[m0];                                                                     \
                FNN_TAP_LOOP(T, a0 += xv * *w;)                                                      \
                out[m0] = a0;                                                                     \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}
FNN_CONV_DIRECT(float, f32, fnn_v8f, 8)
FNN_CONV_DIRECT(double, f64, fnn_v4d, 4)

/* dW (K x M) += sum over the output positions of rows g0 .. g0 + rows of X[tap] dZ[p, :]: for each
 * tap and register block of output channels, the positions are summed in order into registers,
 * then added to dW (the direct counterpart of col^T dZ; the order depends on the geometry only). */
#define FNN_POS_LOOP(T, BODY)                                                                        \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                        \
        const ptrdiff_t n = (g0 + r) / g->Ho, oh = (g0 + r) - n * g->Ho;                          \
        const ptrdiff_t ih = oh * g->sh - g->ph + i;                                              \
        if (ih < 0 || ih >= g->H) continue;                                                       \
        const T *xrow = X + ((n * g->H + ih) * g->W) * C + c;                                     \
        const T *dz = dZ + (g0 + r) * g->Wo * M + m0;                                             \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++, dz += M) {                                       \
            const ptrdiff_t iw = ow * g->sw - g->pw + j;                                          \
            if (iw < 0 || iw >= g->W) continue;                                                   \
            const T xv = xrow[iw * C];                                                            \
            BODY                                                                                  \
        }                                                                                         \
    }

/* dW rows of kernel row i for a block of 4 VL output channels when one kernel row holds exactly
 * three taps (kw C == 3: a 3x3 kernel on one channel, the usual first layer on grey images). The
 * three taps are summed in one pass over the positions, into 12 independent accumulators (the
 * one-tap loop above chains 4 and streams dZ three times as often). Every tap's sum runs over the
 * positions in the same order as in the one-tap loop, so the results are identical to it. */
#define FNN_CONV_DIRECT_DW3(T, SUF, V, VL)                                                        \
static inline __attribute__((always_inline)) void fnn_conv_dw3_##SUF(const T *restrict X, const T *restrict dZ,                  \
                                      T *restrict dW, const fnn_conv_geom *g, ptrdiff_t g0,       \
                                      ptrdiff_t rows, ptrdiff_t i, ptrdiff_t m0) {                \
    const ptrdiff_t C = g->C, M = g->M;                                                           \
    const ptrdiff_t j1 = 1 / C, j2 = 2 / C; /* kernel column of taps 1 and 2 (tap 0: column 0) */ \
    V a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0};     \
    V a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0};                                                 \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                        \
        const ptrdiff_t n = (g0 + r) / g->Ho, oh = (g0 + r) - n * g->Ho;                          \
        const ptrdiff_t ih = oh * g->sh - g->ph + i;                                              \
        if (ih < 0 || ih >= g->H) continue;                                                       \
        const T *xrow = X + ((n * g->H + ih) * g->W) * C;                                         \
        const T *dz = dZ + (g0 + r) * g->Wo * M + m0;                                             \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++, dz += M) {                                       \
            const ptrdiff_t iw0 = ow * g->sw - g->pw;                                             \
            const V d0 = *(const V *)dz, d1 = *(const V *)(dz + (VL));                            \
            const V d2 = *(const V *)(dz + 2 * (VL)), d3 = *(const V *)(dz + 3 * (VL));           \
            const T *x = xrow + iw0 * C;                                                          \
            if (iw0 >= 0 && iw0 + j2 < g->W) {                                                    \
                const T x0 = x[0], x1 = x[1], x2 = x[2];                                          \
                a00 += x0 * d0; a01 += x0 * d1; a02 += x0 * d2; a03 += x0 * d3;                  \
                a10 += x1 * d0; a11 += x1 * d1; a12 += x1 * d2; a13 += x1 * d3;                  \
                a20 += x2 * d0; a21 += x2 * d1; a22 += x2 * d2; a23 += x2 * d3;                  \
                continue;                                                                         \
            }                                                                                     \
            if (iw0 >= 0 && iw0 < g->W) {                                                         \
                const T x0 = x[0];                                                                \
                a00 += x0 * d0; a01 += x0 * d1; a02 += x0 * d2; a03 += x0 * d3;                  \
            }                                                                                     \
            if (iw0 + j1 >= 0 && iw0 + j1 < g->W) {                                               \
                const T x1 = x[1];                                                                \
                a10 += x1 * d0; a11 += x1 * d1; a12 += x1 * d2; a13 += x1 * d3;                  \
            }                                                                                     \
            if (iw0 + j2 >= 0 && iw0 + j2 < g->W) {                                               \
                const T x2 = x[2];                                                                \
                a20 += x2 * d0; a21 += x2 * d1; a22 += x2 * d2; a23 += x2 * d3;                  \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
    T *w = dW + (i * 3) * M + m0;                                                                 \
    *(V *)w += a00; *(V *)(w + (VL)) += a01; *(V *)(w + 2 * (VL)) += a02;                         \
    *(V *)(w + 3 * (VL)) += a03;                                                                  \
    w += M;                                                                                       \
    *(V *)w += a10; *(V *)(w + (VL)) += a11; *(V *)(w + 2 * (VL)) += a12;                         \
    *(V *)(w + 3 * (VL)) += a13;                                                                  \
    w += M;                                                                                       \
    *(V *)w += a20; *(V *)(w + (VL)) += a21; *(V *)(w + 2 * (VL)) += a22;                         \
    *(V *)(w + 3 * (VL)) += a23;                                                                  \
}
FNN_CONV_DIRECT_DW3(float, f32, fnn_v8f, 8)
FNN_CONV_DIRECT_DW3(double, f64, fnn_v4d, 4)

#define FNN_CONV_DIRECT_DW(T, SUF, V, VL)                                                         \
FNN_CLONES static void fnn_conv_direct_dw_##SUF(const T *restrict X, const T *restrict dZ,        \
                                                T *restrict dW, const fnn_conv_geom *g,           \
                                                ptrdiff_t g0, ptrdiff_t rows) {                   \
    const ptrdiff_t C = g->C, M = g->M;                                                           \
    const int three = g->kw * C == 3;                                        \
    for (ptrdiff_t i = 0; i < g->kh; i++)                                                         \
        for (ptrdiff_t j = 0; j < g->kw; j++)                                                     \
            for (ptrdiff_t c = 0; c < C; c++) {                                                   \
                T *w = dW + ((i * g->kw + j) * C + c) * M;                                        \
                ptrdiff_t m0 = 0;                                                                 \
                if (three) { /* the row's 3 taps in one pass, done at its first tap */            \
                    if (j == 0 && c == 0)                                                         \
                        for (; m0 + 4 * (VL) <= M; m0 += 4 * (VL))                                \
                            fnn_conv_dw3_##SUF(X, dZ, dW, g, g0, rows, i, m0);                    \
                    else                                                                          \
                        m0 = M / (4 * (VL)) * (4 * (VL));                                         \
                }                                                                                 \
                for (; m0 + 4 * (VL) <= M; m0 += 4 * (VL)) {                                      \
                    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                     \
                    FNN_POS_LOOP(T, a0 += xv * *(const V *)dz; a1 += xv * *(const V *)(dz + (VL));   \
                                 a2 += xv * *(const V *)(dz + 2 * (VL));                          \
                                 a3 += xv * *(const V *)(dz + 3 * (VL));)                         \
                    *(V *)(w + m0) += a0; *(V *)(w + m0 + (VL)) += a1;                            \
                    *(V *)(w + m0 + 2 * (VL)) += a2; *(V *)(w + m0 + 3 * (VL)) += a3;             \
                }                                                                                 \
                for (; m0 + (VL) <= M; m0 += (VL)) {                                              \
                    V a0 = {0};                                                                   \
                    FNN_POS_LOOP(T, a0 += xv * *(const V *)dz;)                                      \
                    *(V *)(w + m0) += a0;                                                         \
                }                                                                                 \
                for (; m0 < M; m0++) {                                                            \
                    T a0 = 0;                                                                     \
                    FNN_POS_LOOP(T, a0 += xv * *dz;)                                                 \
                    w[m0] += a0;                                                                  \
                }                                                                                 \
            }                                                                                     \
}
FNN_CONV_DIRECT_DW(float, f32, fnn_v8f, 8)
FNN_CONV_DIRECT_DW(double, f64, fnn_v4d, 4)

/* ---- pooling, output rows g0 .. g0 + rows; g->M is unused (= C) --------------------------------
 * Padding: g->ph / g->pw are the top / left offsets (the bottom / right padding only shows in
 * g->Ho / g->Wo). A window is clipped to the input: padded positions take no part (max pooling
 * treats them as -inf, average pooling divides by the number of real positions). The caller
 * guarantees that every window holds at least one real position (padding < kernel size). */

/* Real rows [*lo, *hi) of the window starting at input row i0 of an axis of n positions. */
static inline void fnn_pool_span(ptrdiff_t i0, ptrdiff_t k, ptrdiff_t n, ptrdiff_t *lo,
                                 ptrdiff_t *hi) {
    *lo = i0 < 0 ? 0 : i0;
    *hi = i0 + k < n ? i0 + k : n;
    if (*hi < *lo) *hi = *lo;
}

/* Y = max over each window; argmax = flat position ih * W + iw of the first maximum (a NaN wins,
 * so that NaN propagates as in the other frameworks). */
#define FNN_MAXPOOL(T, SUF)                                                                       \
FNN_CLONES static void fnn_maxpool_##SUF(const T *X, T *Y, int *argmax, const fnn_conv_geom *g,   \
                                         ptrdiff_t g0, ptrdiff_t rows) {                          \
    const ptrdiff_t C = g->C;                                                                     \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                        \
        const ptrdiff_t n = (g0 + r) / g->Ho, oh = (g0 + r) - n * g->Ho;                          \
        const T *img = X + n * g->H * g->W * C;                                                   \
        T *y = Y + (g0 + r) * g->Wo * C;                                                          \
        int *ix = argmax + (g0 + r) * g->Wo * C;                                                  \
        ptrdiff_t ilo, ihi;                                                                       \
        fnn_pool_span(oh * g->sh - g->ph, g->kh, g->H, &ilo, &ihi);                               \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++, y += C, ix += C) {                               \
            ptrdiff_t jlo, jhi;                                                                   \
            fnn_pool_span(ow * g->sw - g->pw, g->kw, g->W, &jlo, &jhi);                           \
            const T *x0 = img + (ilo * g->W + jlo) * C;                                           \
            const int p0 = (int)(ilo * g->W + jlo);                                               \
            for (ptrdiff_t c = 0; c < C; c++) { y[c] = x0[c]; ix[c] = p0; }                       \
            for (ptrdiff_t ih = ilo; ih < ihi; ih++) {                                            \
                for (ptrdiff_t iw = jlo + (ih == ilo); iw < jhi; iw++) {                          \
                    const T *x = img + (ih * g->W + iw) * C;                                      \
                    const int p = (int)(ih * g->W + iw);                                          \
                    for (ptrdiff_t c = 0; c < C; c++) {                                           \
                        const T v = x[c], cur = y[c];                                             \
                        const int take = (v > cur) | ((v != v) & (cur == cur));                   \
                        y[c] = take ? v : cur;                                                    \
                        ix[c] = take ? p : ix[c];                                                 \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}
FNN_MAXPOOL(float, f32)
FNN_MAXPOOL(double, f64)

/* dX[n] (zeroed by the caller) += dY routed to the argmax positions, images n0 .. n1. */
#define FNN_MAXPOOL_BACKWARD(T, SUF)                                                              \
FNN_CLONES static void fnn_maxpool_backward_##SUF(const T *dY, const int *argmax, T *dX,          \
                                                  const fnn_conv_geom *g, ptrdiff_t n) {          \
    const ptrdiff_t C = g->C, P = g->Ho * g->Wo;                                                  \
    T *img = dX + n * g->H * g->W * C;                                                            \
    const T *d = dY + n * P * C;                                                                  \
    const int *ix = argmax + n * P * C;                                                           \
    for (ptrdiff_t p = 0; p < P; p++, d += C, ix += C)                                            \
        for (ptrdiff_t c = 0; c < C; c++) img[(ptrdiff_t)ix[c] * C + c] += d[c];                  \
}
FNN_MAXPOOL_BACKWARD(float, f32)
FNN_MAXPOOL_BACKWARD(double, f64)

/* The same for windows that tile the image (stride == kernel size): every position of image n of
 * dX is written exactly once (dY where it is its window's argmax, else 0; 0 outside every window),
 * so dX needs no zeroing pass first. argmax must come from fnn_maxpool (each entry inside its own
 * window), as the general version also requires for the same result. */
#define FNN_MAXPOOL_BACKWARD_TILED(T, SUF)                                                        \
FNN_CLONES static void fnn_maxpool_backward_tiled_##SUF(const T *dY, const int *argmax, T *dX,    \
                                                        const fnn_conv_geom *g, ptrdiff_t n) {    \
    const ptrdiff_t C = g->C, H = g->H, W = g->W, kh = g->kh, kw = g->kw;                         \
    const ptrdiff_t P = g->Ho * g->Wo;                                                            \
    T *img = dX + n * H * W * C;                                                                  \
    const T *dimg = dY + n * P * C;                                                               \
    const int *iimg = argmax + n * P * C;                                                         \
    for (ptrdiff_t oh = 0; oh < g->Ho; oh++)                                                      \
        for (ptrdiff_t i = 0; i < kh; i++) {                                                      \
            const ptrdiff_t ih = oh * kh + i;                                                     \
            T *row = img + ih * W * C;                                                            \
            for (ptrdiff_t ow = 0; ow < g->Wo; ow++) {                                            \
                const T *d = dimg + (oh * g->Wo + ow) * C;                                        \
                const int *ix = iimg + (oh * g->Wo + ow) * C;                                     \
                for (ptrdiff_t j = 0; j < kw; j++) {                                              \
                    const int pos = (int)(ih * W + ow * kw + j);                                  \
                    T *x = row + (ow * kw + j) * C;                                               \
                    for (ptrdiff_t c = 0; c < C; c++) x[c] = ix[c] == pos ? d[c] : (T)0;          \
                }                                                                                 \
            }                                                                                     \
            memset(row + g->Wo * kw * C, 0, (size_t)((W - g->Wo * kw) * C) * sizeof(T));         \
        }                                                                                         \
    memset(img + g->Ho * kh * W * C, 0, (size_t)((H - g->Ho * kh) * W * C) * sizeof(T));          \
}
FNN_MAXPOOL_BACKWARD_TILED(float, f32)
FNN_MAXPOOL_BACKWARD_TILED(double, f64)

/* Y = mean over each window's real positions (sum in window order, then times 1 / count; without
 * padding count = kh kw). */
#define FNN_AVGPOOL(T, SUF)                                                                       \
FNN_CLONES static void fnn_avgpool_##SUF(const T *X, T *Y, const fnn_conv_geom *g, ptrdiff_t g0,  \
                                         ptrdiff_t rows) {                                        \
    const ptrdiff_t C = g->C;                                                                     \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                        \
        const ptrdiff_t n = (g0 + r) / g->Ho, oh = (g0 + r) - n * g->Ho;                          \
        const T *img = X + n * g->H * g->W * C;                                                   \
        T *y = Y + (g0 + r) * g->Wo * C;                                                          \
        ptrdiff_t ilo, ihi;                                                                       \
        fnn_pool_span(oh * g->sh - g->ph, g->kh, g->H, &ilo, &ihi);                               \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++, y += C) {                                        \
            ptrdiff_t jlo, jhi;                                                                   \
            fnn_pool_span(ow * g->sw - g->pw, g->kw, g->W, &jlo, &jhi);                           \
            const T inv = (T)1 / (T)((ihi - ilo) * (jhi - jlo));                                  \
            for (ptrdiff_t c = 0; c < C; c++) y[c] = (T)0;                                        \
            for (ptrdiff_t ih = ilo; ih < ihi; ih++)                                              \
                for (ptrdiff_t iw = jlo; iw < jhi; iw++) {                                        \
                    const T *x = img + (ih * g->W + iw) * C;                                      \
                    for (ptrdiff_t c = 0; c < C; c++) y[c] += x[c];                               \
                }                                                                                 \
            for (ptrdiff_t c = 0; c < C; c++) y[c] *= inv;                                        \
        }                                                                                         \
    }                                                                                             \
}
FNN_AVGPOOL(float, f32)
FNN_AVGPOOL(double, f64)

/* dX[n] (zeroed by the caller) += dY[n, oh, ow] / count over each window's real positions, in
 * output order. */
#define FNN_AVGPOOL_BACKWARD(T, SUF)                                                              \
FNN_CLONES static void fnn_avgpool_backward_##SUF(const T *dY, T *dX, const fnn_conv_geom *g,     \
                                                  ptrdiff_t n) {                                  \
    const ptrdiff_t C = g->C;                                                                     \
    T *img = dX + n * g->H * g->W * C;                                                            \
    const T *d = dY + n * g->Ho * g->Wo * C;                                                      \
    for (ptrdiff_t oh = 0; oh < g->Ho; oh++) {                                                    \
        ptrdiff_t ilo, ihi;                                                                       \
        fnn_pool_span(oh * g->sh - g->ph, g->kh, g->H, &ilo, &ihi);                               \
        for (ptrdiff_t ow = 0; ow < g->Wo; ow++, d += C) {                                        \
            ptrdiff_t jlo, jhi;                                                                   \
            fnn_pool_span(ow * g->sw - g->pw, g->kw, g->W, &jlo, &jhi);                           \
            const T inv = (T)1 / (T)((ihi - ilo) * (jhi - jlo));                                  \
            for (ptrdiff_t ih = ilo; ih < ihi; ih++)                                              \
                for (ptrdiff_t iw = jlo; iw < jhi; iw++) {                                        \
                    T *x = img + (ih * g->W + iw) * C;                                            \
                    for (ptrdiff_t c = 0; c < C; c++) x[c] += d[c] * inv;                         \
                }                                                                                 \
        }                                                                                         \
    }                                                                                             \
}
FNN_AVGPOOL_BACKWARD(float, f32)
FNN_AVGPOOL_BACKWARD(double, f64)

/* ---- global average pooling: Y[n, c] = sum over the H W positions of X[n, p, c] (in position
 * order) / (H W); its backward dX[n, p, c] = dY[n, c] / (H W). One image per call. */
#define FNN_GLOBAL_AVGPOOL(T, SUF)                                                                \
FNN_CLONES static void fnn_global_avgpool_##SUF(const T *X, T *Y, ptrdiff_t P, ptrdiff_t C,       \
                                                ptrdiff_t n) {                                    \
    const T *x = X + n * P * C;                                                                   \
    T *y = Y + n * C;                                                                             \
    const T count = (T)P;                                                                         \
    for (ptrdiff_t c = 0; c < C; c++) y[c] = (T)0;                                                \
    for (ptrdiff_t p = 0; p < P; p++, x += C)                                                     \
        for (ptrdiff_t c = 0; c < C; c++) y[c] += x[c];                                           \
    for (ptrdiff_t c = 0; c < C; c++) y[c] /= count;                                              \
}                                                                                                 \
FNN_CLONES static void fnn_global_avgpool_backward_##SUF(const T *dY, T *dX, ptrdiff_t P,         \
                                                         ptrdiff_t C, ptrdiff_t n) {              \
    T *x = dX + n * P * C;                                                                        \
    const T *d = dY + n * C;                                                                      \
    const T count = (T)P;                                                                         \
    for (ptrdiff_t c = 0; c < C; c++) x[c] = d[c] / count;                                        \
    for (ptrdiff_t p = 1; p < P; p++)                                                             \
        memcpy(x + p * C, x, (size_t)C * sizeof(T));                                              \
}
FNN_GLOBAL_AVGPOOL(float, f32)
FNN_GLOBAL_AVGPOOL(double, f64)

/* ---- im2col straight into bfloat16, for the mixed-precision GEMM (bgemm.h) -------------------
 * The same receptive fields as fnn_im2col_f32, each value rounded to bfloat16 as it is copied
 * (bgemm.h's rounding), in the two layouts fnn_bgemm_vnni reads without packing:
 * - fnn_im2col_bf16: row-major, position p's K values at col[p ld ...], zeros from K to ld
 *   (the forward GEMM's A operand);
 * - fnn_im2col_vnni_bf16: the VNNI layout, the pairs of positions (2q, 2q + 1) interleaved,
 *   colv[(q ld + k) 2 + t] = field of position 2q + t at k, zeros from K to ld and for positions
 *   from npos to npos_pad (the weight gradient's B operand, positions being its inner dimension).
 * AVX-512 only (the callers use them when the bfloat16 kernel is avx512_bf16 or amx). */
#ifdef FNN_GEMM_X86
typedef struct {
    const float *img;     /* the position's image */
    ptrdiff_t oh, iw0, a, b;  /* output row, first input column, valid part [a, b) of each run */
    int live;             /* 0: a padding position past the block (all zeros) */
} fnn_conv_pos;

static inline void fnn_conv_pos_at(const float *X, const fnn_conv_geom *g, ptrdiff_t g0,
                                   ptrdiff_t npos, ptrdiff_t p, fnn_conv_pos *q) {
    memset(q, 0, sizeof(*q));
    q->live = p < npos;
    if (!q->live) return;
    const ptrdiff_t r = p / g->Wo, ow = p - r * g->Wo;
    const ptrdiff_t n = (g0 + r) / g->Ho;
    ptrdiff_t jlo, jhi;
    q->oh = (g0 + r) - n * g->Ho;
    q->img = X + n * g->H * g->W * g->C;
    q->iw0 = ow * g->sw - g->pw;
    fnn_conv_cols(g, q->iw0, &jlo, &jhi);
    q->a = jlo * g->C;
    q->b = jhi * g->C;
}

/* The run of kernel row i of a position: *src points at run value 0 (only values [a, b) are
 * read from it, through masks); returns 0 when the whole run is padding. */
static inline int fnn_conv_run(const fnn_conv_pos *q, const fnn_conv_geom *g, ptrdiff_t i,
                               const float **src) {
    if (!q->live || q->a == q->b) return 0;
    const ptrdiff_t ih = q->oh * g->sh - g->ph + i;
    if (ih < 0 || ih >= g->H) return 0;
    /* value a of the run is input column iw0 + jlo; value 0 would be a values before it */
    *src = q->img + (ih * g->W + q->iw0) * g->C;
    return 1;
}

/* lanes k .. k + 15 of a run that lie in [a, b) */
static inline __mmask16 fnn_run_mask(ptrdiff_t a, ptrdiff_t b, ptrdiff_t k) {
    ptrdiff_t lo = a - k, hi = b - k;
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

#define FNN_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

FNN_BF16_TARGET static inline __m512 fnn_run_load(int on, const float *src,
                                                  const fnn_conv_pos *q, ptrdiff_t k) {
    if (!on) return _mm512_setzero_ps();
    /* masked lanes are never read (AVX-512 masked loads do not fault on them) */
    return _mm512_maskz_loadu_ps(fnn_run_mask(q->a, q->b, k), src + k);
}

/* lanes k .. k + 31 of a run of length run */
static inline __mmask32 fnn_run_tail32(ptrdiff_t run, ptrdiff_t k) {
    return run - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (run - k)) - 1u);
}

/* 32 floats -> 32 bfloat16 by vcvtne2ps2bf16: round to nearest even, denormals as zero, NaN kept
 * quiet: fnn_f2bf's rounding (the tests check every bit-pattern class) */
FNN_BF16_TARGET static inline __m512i fnn_cvt32_bf16(__m512 lo, __m512 hi) {
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* positions p0 .. p0 + n of the block's rows g0 .. g0 + rows, into col's rows 0 .. n */
FNN_BF16_TARGET static void
fnn_im2col_bf16(const float *X, uint16_t *col, ptrdiff_t ld, const fnn_conv_geom *g,
                ptrdiff_t g0, ptrdiff_t rows, ptrdiff_t p0, ptrdiff_t n) {
    const ptrdiff_t run = g->kw * g->C, npos = rows * g->Wo;
    for (ptrdiff_t p = 0; p < n; p++) {
        fnn_conv_pos q;
        fnn_conv_pos_at(X, g, g0, npos, p0 + p, &q);
        uint16_t *dst = col + p * ld;
        for (ptrdiff_t i = 0; i < g->kh; i++, dst += run) {
            const float *src = NULL;
            const int on = fnn_conv_run(&q, g, i, &src);
            ptrdiff_t k0 = 0;
            if (on && q.a == 0 && q.b == run)  /* a whole run inside the input: no masks */
                for (; k0 + 32 <= run; k0 += 32)
                    _mm512_storeu_si512((void *)(dst + k0),
                                        fnn_cvt32_bf16(_mm512_loadu_ps(src + k0),
                                                       _mm512_loadu_ps(src + k0 + 16)));
            for (ptrdiff_t k = k0; k < run; k += 32) {
                const __m512 lo = fnn_run_load(on, src, &q, k);
                const __m512 hi = fnn_run_load(on, src, &q, k + 16);
                _mm512_mask_storeu_epi16(dst + k, fnn_run_tail32(run, k), fnn_cvt32_bf16(lo, hi));
            }
        }
        for (ptrdiff_t k = g->K; k < ld; k++) col[p * ld + k] = 0;
    }
}

/* The forward of one block of output rows in bfloat16: out ((rows Wo) x M) = bias + im2col W,
 * 32 positions at a time, their im2col written into buf (32 x ld bfloat16, small enough to stay
 * in L1) and multiplied by Wpk (fnn_bgemm_pack_full's panels of W, K x M) at once. Returns 0, or
 * the GEMM's -1. */
static int fnn_conv_forward_bf16(int level, const float *X, const fnn_conv_geom *g, ptrdiff_t g0,
                                 ptrdiff_t rows, const uint16_t *Wpk, const float *bias,
                                 ptrdiff_t ld, uint16_t *buf, float *out) {
    const ptrdiff_t npos = rows * g->Wo;
    for (ptrdiff_t p0 = 0; p0 < npos; p0 += 32) {
        const ptrdiff_t n = npos - p0 < 32 ? npos - p0 : 32;
        fnn_im2col_bf16(X, buf, ld, g, g0, rows, p0, n);
        if (fnn_bgemm_vnni_bias(level, n, g->M, g->K, NULL, 0, 0, buf, ld, Wpk, 32, ld * 32, 0,
                                bias, out + p0 * g->M, g->M, 0) != 0)
            return -1;
    }
    return 0;
}

FNN_BF16_TARGET static void
fnn_im2col_vnni_bf16(const float *X, uint16_t *colv, ptrdiff_t ld, const fnn_conv_geom *g,
                     ptrdiff_t g0, ptrdiff_t rows, ptrdiff_t npos_pad) {
    const ptrdiff_t run = g->kw * g->C, npos = rows * g->Wo;
    /* (e0 .. e15, o0 .. o15) -> (e0, o0, e1, o1, ...) */
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                           24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                           16, 0);
    for (ptrdiff_t p = 0; p < npos_pad; p += 2) {
        fnn_conv_pos q0, q1;
        fnn_conv_pos_at(X, g, g0, npos, p, &q0);
        fnn_conv_pos_at(X, g, g0, npos, p + 1, &q1);
        int32_t *dst = (int32_t *)colv + (p / 2) * ld;
        if (!q0.live && !q1.live) {
            memset(dst, 0, (size_t)ld * 4);
            continue;
        }
        for (ptrdiff_t i = 0; i < g->kh; i++, dst += run) {
            const float *s0 = NULL, *s1 = NULL;
            const int on0 = fnn_conv_run(&q0, g, i, &s0), on1 = fnn_conv_run(&q1, g, i, &s1);
            ptrdiff_t k0 = 0;
            if (on0 && on1 && q0.a == 0 && q0.b == run && q1.a == 0 && q1.b == run)
                for (; k0 + 16 <= run; k0 += 16)  /* whole runs inside the input: no masks */
                    _mm512_storeu_si512((void *)(dst + k0),
                                        _mm512_permutexvar_epi16(
                                            inter, fnn_cvt32_bf16(_mm512_loadu_ps(s0 + k0),
                                                                  _mm512_loadu_ps(s1 + k0))));
            for (ptrdiff_t k = k0; k < run; k += 16) {
                const __mmask16 st = run - k >= 16 ? (__mmask16)0xffff
                                                   : (__mmask16)((1u << (run - k)) - 1u);
                const __m512i eo = fnn_cvt32_bf16(fnn_run_load(on0, s0, &q0, k),
                                                  fnn_run_load(on1, s1, &q1, k));
                _mm512_mask_storeu_epi32(dst + k, st, _mm512_permutexvar_epi16(inter, eo));
            }
        }
        int32_t *row = (int32_t *)colv + (p / 2) * ld;
        for (ptrdiff_t k = g->K; k < ld; k++) row[k] = 0;
    }
}
#else
/* not x86: never called (the bfloat16 kernel is the emulated one, whose callers keep the float32
 * im2col); defined so that conv.pyx links */
static int fnn_conv_forward_bf16(int level, const float *X, const fnn_conv_geom *g, ptrdiff_t g0,
                                 ptrdiff_t rows, const uint16_t *Wpk, const float *bias,
                                 ptrdiff_t ld, uint16_t *buf, float *out) {
    (void)level; (void)X; (void)g; (void)g0; (void)rows; (void)Wpk; (void)bias; (void)ld;
    (void)buf; (void)out;
    return -1;
}
static void fnn_im2col_vnni_bf16(const float *X, uint16_t *colv, ptrdiff_t ld,
                                 const fnn_conv_geom *g, ptrdiff_t g0, ptrdiff_t rows,
                                 ptrdiff_t npos_pad) {
    (void)X; (void)colv; (void)ld; (void)g; (void)g0; (void)rows; (void)npos_pad;
}
#endif
#endif
