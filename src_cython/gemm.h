/* fastnn's own single-precision GEMM: C (M x N) = [C +] A (M x K) B (K x N), any strides.
 *
 * Design (BLIS's, narrowed to the shapes fastnn trains: a few hundred rows, K up to a few
 * thousand, N from 10 to 512):
 * - B is packed into panels of NR columns (k-major, zero-padded to NR), KC rows of K at a time;
 *   A is not packed: the micro-kernel broadcasts A[i, p] straight from memory through its two
 *   strides (row-major A, e.g. an im2col block, and column-major A, e.g. X^T in a weight
 *   gradient, both read as contiguous runs; packing A would copy as many values as it feeds FMAs
 *   when N is 32-64).
 * - The micro-kernel holds an MR x NR tile of C in registers: AVX-512 12 x 32 (24 zmm
 *   accumulators), AVX2+FMA 6 x 16 (12 ymm), a portable 4 x 16 loop otherwise. Each KC slice of
 *   the sum starts from zero in registers and is then added to C (the first slice overwrites C
 *   unless accumulating).
 * - Results are a function of (M, N, K, the data, the kernel) only: every C element is summed
 *   over k in the same order whatever the row/column split of the caller, so results do not
 *   depend on the number of threads. AVX-512 edge tiles (fewer rows or columns) use the same
 *   sums with masked stores (fnn_ukr_avx512_edge); the other kernels' edge tiles go through a
 *   zero-padded copy. Fewer rows than MR: fnn_small_*, B read in place, the same sums again.
 * - Single-threaded: fastnn's OpenMP loops call it per block. The pack buffers are per thread
 *   (thread-local, grown on demand, kept for the thread's life).
 * The kernel is chosen once at first use from cpuid (see fnn_gemm_get_level below).
 */
#ifndef FNN_GEMM_H
#define FNN_GEMM_H
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FNN_GEMM_X86 1
#endif

#ifndef FNN_GEMM_KC
#define FNN_GEMM_KC 128
#endif
#define FNN_GEMM_MC 192
#define FNN_GEMM_NC 1024
#define FNN_GEMM_MAXMR 12
#define FNN_GEMM_MAXNR 32

enum { FNN_GEMM_BLAS = 0, FNN_GEMM_GENERIC = 1, FNN_GEMM_AVX2 = 2, FNN_GEMM_AVX512 = 3 };
static const char *const fnn_gemm_names[] = {"blas", "generic", "avx2", "avx512"};

/* ukr(kc, A, ars, acs, Bp, C, ldc, acc): C[0:MR, 0:NR] (ldc) = (acc ? C : 0) + A[0:MR, 0:kc] Bp */
typedef void (*fnn_ukr_t)(ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, const float *, float *,
                          ptrdiff_t, int);

/* ---- portable micro-kernel (4 x 16) -------------------------------------------------------- */
static void fnn_ukr_generic(ptrdiff_t kc, const float *A, ptrdiff_t ars, ptrdiff_t acs,
                            const float *B, float *C, ptrdiff_t ldc, int acc) {
    float t[4][16];
    memset(t, 0, sizeof t);
    for (ptrdiff_t p = 0; p < kc; p++, B += 16) {
        for (int i = 0; i < 4; i++) {
            const float a = A[i * ars + p * acs];
            for (int j = 0; j < 16; j++) t[i][j] += a * B[j];
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 16; j++) C[i * ldc + j] = acc ? C[i * ldc + j] + t[i][j] : t[i][j];
}

#ifdef FNN_GEMM_X86
/* ---- AVX2 + FMA micro-kernel (6 x 16) ------------------------------------------------------ */
#define FNN_AVX2_ROW(i)                                                                           \
    { const __m256 a = _mm256_broadcast_ss(pa + (i) * ars);                                       \
      c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0); c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1); }
#define FNN_AVX2_OUT(i)                                                                           \
    { float *c = C + (i) * ldc;                                                                   \
      if (acc) { c##i##0 = _mm256_add_ps(_mm256_loadu_ps(c), c##i##0);                            \
                 c##i##1 = _mm256_add_ps(_mm256_loadu_ps(c + 8), c##i##1); }                      \
      _mm256_storeu_ps(c, c##i##0); _mm256_storeu_ps(c + 8, c##i##1); }

__attribute__((target("avx2,fma"), optimize("no-predictive-commoning"), always_inline)) static inline void
fnn_ukr_avx2_body(ptrdiff_t kc, const float *A, ptrdiff_t ars, ptrdiff_t acs, const float *B,
                  float *C, ptrdiff_t ldc, int acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *pa = A;
    for (ptrdiff_t p = 0; p < kc; p++, B += 16, pa += acs) {
        const __m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8);
        FNN_AVX2_ROW(0) FNN_AVX2_ROW(1) FNN_AVX2_ROW(2)
        FNN_AVX2_ROW(3) FNN_AVX2_ROW(4) FNN_AVX2_ROW(5)
    }
    FNN_AVX2_OUT(0) FNN_AVX2_OUT(1) FNN_AVX2_OUT(2)
    FNN_AVX2_OUT(3) FNN_AVX2_OUT(4) FNN_AVX2_OUT(5)
}

__attribute__((target("avx2,fma"), optimize("no-predictive-commoning"))) static void
fnn_ukr_avx2(ptrdiff_t kc, const float *A, ptrdiff_t ars, ptrdiff_t acs, const float *B, float *C,
             ptrdiff_t ldc, int acc) {
    if (ars == 1)  /* column-major A: the MR values of one k are adjacent */
        fnn_ukr_avx2_body(kc, A, 1, acs, B, C, ldc, acc);
    else if (acs == 1)
        fnn_ukr_avx2_body(kc, A, ars, 1, B, C, ldc, acc);
    else
        fnn_ukr_avx2_body(kc, A, ars, acs, B, C, ldc, acc);
}

/* ---- AVX-512 micro-kernel (12 x 32) -------------------------------------------------------- */
#define FNN_AVX512_ROW(i)                                                                         \
    { const __m512 a = _mm512_set1_ps(pa[(i) * ars]);                                             \
      c##i##_0 = _mm512_fmadd_ps(a, b0, c##i##_0); c##i##_1 = _mm512_fmadd_ps(a, b1, c##i##_1); }
#define FNN_AVX512_OUT(i)                                                                         \
    { float *c = C + (i) * ldc;                                                                   \
      if (acc) { c##i##_0 = _mm512_add_ps(_mm512_loadu_ps(c), c##i##_0);                           \
                 c##i##_1 = _mm512_add_ps(_mm512_loadu_ps(c + 16), c##i##_1); }                   \
      _mm512_storeu_ps(c, c##i##_0); _mm512_storeu_ps(c + 16, c##i##_1); }

__attribute__((target("avx512f"), optimize("no-predictive-commoning"), always_inline)) static inline void
fnn_ukr_avx512_body(ptrdiff_t kc, const float *A, ptrdiff_t ars, ptrdiff_t acs, const float *B,
                    float *C, ptrdiff_t ldc, int acc) {
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0;
    __m512 c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0;
    __m512 c5_1 = c0_0, c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0;
    __m512 c8_1 = c0_0, c9_0 = c0_0, c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0;
    __m512 c11_1 = c0_0;
    const float *pa = A;
    for (ptrdiff_t p = 0; p < kc; p++, B += 32, pa += acs) {
        const __m512 b0 = _mm512_loadu_ps(B), b1 = _mm512_loadu_ps(B + 16);
        FNN_AVX512_ROW(0) FNN_AVX512_ROW(1) FNN_AVX512_ROW(2) FNN_AVX512_ROW(3)
        FNN_AVX512_ROW(4) FNN_AVX512_ROW(5) FNN_AVX512_ROW(6) FNN_AVX512_ROW(7)
        FNN_AVX512_ROW(8) FNN_AVX512_ROW(9) FNN_AVX512_ROW(10) FNN_AVX512_ROW(11)
    }
    FNN_AVX512_OUT(0) FNN_AVX512_OUT(1) FNN_AVX512_OUT(2) FNN_AVX512_OUT(3)
    FNN_AVX512_OUT(4) FNN_AVX512_OUT(5) FNN_AVX512_OUT(6) FNN_AVX512_OUT(7)
    FNN_AVX512_OUT(8) FNN_AVX512_OUT(9) FNN_AVX512_OUT(10) FNN_AVX512_OUT(11)
}

__attribute__((target("avx512f"), optimize("no-predictive-commoning"))) static void
fnn_ukr_avx512(ptrdiff_t kc, const float *A, ptrdiff_t ars, ptrdiff_t acs, const float *B,
               float *C, ptrdiff_t ldc, int acc) {
    if (ars == 1)
        fnn_ukr_avx512_body(kc, A, 1, acs, B, C, ldc, acc);
    else if (acs == 1)
        fnn_ukr_avx512_body(kc, A, ars, 1, B, C, ldc, acc);
    else
        fnn_ukr_avx512_body(kc, A, ars, acs, B, C, ldc, acc);
}

static inline __mmask16 fnn_mask16(ptrdiff_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0
                                                      : (__mmask16)((1u << left) - 1);
}
/* ---- AVX-512 edge tiles: mr < 12 rows and/or nr < 32 columns, from the same packed B --------
 * The same sums in the same order as fnn_ukr_avx512 (bit-identical), R a constant per
 * instantiation so the accumulators stay in registers; columns past nr are masked off. */
__attribute__((target("avx512f"), optimize("no-predictive-commoning"), always_inline))
static inline void fnn_ukr_avx512_rows(const int R, ptrdiff_t kc, const float *A, ptrdiff_t ars,
                                       ptrdiff_t acs, const float *B, float *C, ptrdiff_t ldc,
                                       int acc, ptrdiff_t nr) {
    __m512 c0[12], c1[12];
    for (int i = 0; i < R; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    const float *pa = A;
    for (ptrdiff_t p = 0; p < kc; p++, B += 32, pa += acs) {
        const __m512 b0 = _mm512_loadu_ps(B), b1 = _mm512_loadu_ps(B + 16);
        for (int i = 0; i < R; i++) {
            const __m512 a = _mm512_set1_ps(pa[i * ars]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
    }
    const __mmask16 k0 = fnn_mask16(nr), k1 = fnn_mask16(nr - 16);
    for (int i = 0; i < R; i++) {
        float *c = C + i * ldc;
        if (acc) {
            c0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(k0, c), c0[i]);
            c1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(k1, c + 16), c1[i]);
        }
        _mm512_mask_storeu_ps(c, k0, c0[i]);
        _mm512_mask_storeu_ps(c + 16, k1, c1[i]);
    }
}

#define FNN_EDGE_CASE(R) \
    case R: fnn_ukr_avx512_rows(R, kc, A, ars, acs, B, C, ldc, acc, nr); break;
__attribute__((target("avx512f"), optimize("no-predictive-commoning"))) static void
fnn_ukr_avx512_edge(int mr, ptrdiff_t nr, ptrdiff_t kc, const float *A, ptrdiff_t ars,
                    ptrdiff_t acs, const float *B, float *C, ptrdiff_t ldc, int acc) {
    switch (mr) {
        FNN_EDGE_CASE(1) FNN_EDGE_CASE(2) FNN_EDGE_CASE(3) FNN_EDGE_CASE(4) FNN_EDGE_CASE(5)
        FNN_EDGE_CASE(6) FNN_EDGE_CASE(7) FNN_EDGE_CASE(8) FNN_EDGE_CASE(9) FNN_EDGE_CASE(10)
        FNN_EDGE_CASE(11) FNN_EDGE_CASE(12)
        default: break;
    }
}
#undef FNN_EDGE_CASE

/* ---- few rows (predict at batch 1, the rows left below a multiple of MR): B read in place ----
 * C[0:m, 0:N] = (acc ? C : 0) + A[0:m, 0:kc] B[0:kc, 0:N], B row-major (row stride brs), m <= 4,
 * NV vectors of columns per pass (m * NV accumulators: enough independent FMA chains to hide
 * their latency). Each C element is summed in the same order and with the same FMAs as in the
 * tiled kernel of the same level, so a row's result does not depend on the number of rows. */
#define FNN_SMALL_BODY(V, W, SETZERO, LOAD, STORE, BCAST, FMA, ADD, MASKT, MKMASK)                \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += NV * (W)) {                                              \
        const ptrdiff_t nr = N - j0 < NV * (W) ? N - j0 : NV * (W);                               \
        MASKT mk[8]; /* fixed sizes (not VLAs): the arrays become registers */                   \
        for (int v = 0; v < NV; v++) mk[v] = MKMASK(nr - (W) * v);                                \
        V c[4][8];                                                                                \
        for (int i = 0; i < MROWS; i++)                                                           \
            for (int v = 0; v < NV; v++) c[i][v] = SETZERO();                                     \
        const float *b = B + j0;                                                                  \
        for (ptrdiff_t p = 0; p < kc; p++, b += brs) {                                            \
            V bv[8];                                                                              \
            for (int v = 0; v < NV; v++) bv[v] = LOAD(mk[v], b + (W) * v);                        \
            for (int i = 0; i < MROWS; i++) {                                                     \
                const V a = BCAST(A + i * ars + p * acs);                                         \
                for (int v = 0; v < NV; v++) c[i][v] = FMA(a, bv[v], c[i][v]);                    \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < MROWS; i++) {                                                         \
            float *cr = C + i * ldc + j0;                                                         \
            for (int v = 0; v < NV; v++) {                                                        \
                V r = c[i][v];                                                                    \
                if (acc) r = ADD(LOAD(mk[v], cr + (W) * v), r);                                   \
                STORE(mk[v], cr + (W) * v, r);                                                    \
            }                                                                                     \
        }                                                                                         \
    }

#define FNN_Z512() _mm512_setzero_ps()
#define FNN_LD512(k, p) _mm512_maskz_loadu_ps((k), (p))
#define FNN_ST512(k, p, v) _mm512_mask_storeu_ps((p), (k), (v))
#define FNN_BC512(p) _mm512_set1_ps(*(p))
__attribute__((target("avx512f"), optimize("no-predictive-commoning"), always_inline))
static inline void fnn_small_avx512_nv(const int NV, const int MROWS, ptrdiff_t N, ptrdiff_t kc,
                                       const float *A, ptrdiff_t ars, ptrdiff_t acs,
                                       const float *B, ptrdiff_t brs, float *C, ptrdiff_t ldc,
                                       int acc) {
    FNN_SMALL_BODY(__m512, 16, FNN_Z512, FNN_LD512, FNN_ST512, FNN_BC512, _mm512_fmadd_ps,
                   _mm512_add_ps, __mmask16, fnn_mask16)
}
__attribute__((target("avx512f"), optimize("no-predictive-commoning"))) static void
fnn_small_avx512(ptrdiff_t m, ptrdiff_t N, ptrdiff_t kc, const float *A, ptrdiff_t ars,
                 ptrdiff_t acs, const float *B, ptrdiff_t brs, float *C, ptrdiff_t ldc, int acc) {
    switch (m) {  /* m x NV accumulators, a constant: they stay in registers */
    case 1: fnn_small_avx512_nv(8, 1, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    case 2: fnn_small_avx512_nv(8, 2, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    case 3: fnn_small_avx512_nv(4, 3, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    default: fnn_small_avx512_nv(4, 4, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    }
}

#define FNN_Z256() _mm256_setzero_ps()
#define FNN_LD256(k, p) _mm256_maskload_ps((p), (k))
#define FNN_ST256(k, p, v) _mm256_maskstore_ps((p), (k), (v))
#define FNN_BC256(p) _mm256_broadcast_ss(p)
__attribute__((target("avx2,fma"))) static inline __m256i fnn_mask8(ptrdiff_t left) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int n = left >= 8 ? 8 : left <= 0 ? 0 : (int)left;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
}
__attribute__((target("avx2,fma"), optimize("no-predictive-commoning"), always_inline))
static inline void fnn_small_avx2_nv(const int NV, const int MROWS, ptrdiff_t N, ptrdiff_t kc,
                                     const float *A, ptrdiff_t ars, ptrdiff_t acs,
                                     const float *B, ptrdiff_t brs, float *C, ptrdiff_t ldc,
                                     int acc) {
    FNN_SMALL_BODY(__m256, 8, FNN_Z256, FNN_LD256, FNN_ST256, FNN_BC256, _mm256_fmadd_ps,
                   _mm256_add_ps, __m256i, fnn_mask8)
}
__attribute__((target("avx2,fma"), optimize("no-predictive-commoning"))) static void
fnn_small_avx2(ptrdiff_t m, ptrdiff_t N, ptrdiff_t kc, const float *A, ptrdiff_t ars,
               ptrdiff_t acs, const float *B, ptrdiff_t brs, float *C, ptrdiff_t ldc, int acc) {
    switch (m) {  /* at most 8 accumulators: 16 ymm registers in all */
    case 1: fnn_small_avx2_nv(4, 1, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    case 2: fnn_small_avx2_nv(4, 2, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    case 3: fnn_small_avx2_nv(2, 3, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    default: fnn_small_avx2_nv(2, 4, N, kc, A, ars, acs, B, brs, C, ldc, acc); break;
    }
}
#endif /* FNN_GEMM_X86 */

/* ---- the FMA peak of one core: independent FMA chains on registers ----------------------- */
#ifdef FNN_GEMM_X86
#define FNN_PEAK_CHAINS(T, FMA, SET1) \
    T a0 = SET1(1.f), a1 = SET1(2.f), a2 = SET1(3.f), a3 = SET1(4.f), a4 = SET1(5.f);           \
    T a5 = SET1(6.f), a6 = SET1(7.f), a7 = SET1(8.f), a8 = SET1(9.f), a9 = SET1(10.f);          \
    T a10 = SET1(11.f), a11 = SET1(12.f);                                                       \
    const T x = SET1(0.999f), y = SET1(1e-7f);                                                  \
    for (long r = 0; r < reps; r++) {                                                           \
        a0 = FMA(a0, x, y); a1 = FMA(a1, x, y); a2 = FMA(a2, x, y); a3 = FMA(a3, x, y);         \
        a4 = FMA(a4, x, y); a5 = FMA(a5, x, y); a6 = FMA(a6, x, y); a7 = FMA(a7, x, y);         \
        a8 = FMA(a8, x, y); a9 = FMA(a9, x, y); a10 = FMA(a10, x, y); a11 = FMA(a11, x, y);     \
    }
__attribute__((target("avx512f"), noipa)) static float fnn_peak_avx512(long reps) {
    FNN_PEAK_CHAINS(__m512, _mm512_fmadd_ps, _mm512_set1_ps)
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"), noipa)) static float fnn_peak_avx2(long reps) {
    FNN_PEAK_CHAINS(__m256, _mm256_fmadd_ps, _mm256_set1_ps)
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float o[8];
    _mm256_storeu_ps(o, s);
    return o[0];
}
#undef FNN_PEAK_CHAINS
#endif
/* Run reps iterations of 12 independent float32 FMA chains of the widest vectors (AVX-512, else
 * AVX2); returns the FLOPs done (0 without AVX2). *sink receives the result. The chains are
 * noipa: otherwise gcc proves them pure and drops a call whose result is not used. */
static double fnn_fma_peak_run(long reps, float *sink) {
#ifdef FNN_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) { *sink = fnn_peak_avx512(reps); return 12.0 * 32 * reps; }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        *sink = fnn_peak_avx2(reps);
        return 12.0 * 16 * reps;
    }
#endif
    (void)reps;
    *sink = 0.f;
    return 0.0;
}

/* ---- kernel selection ---------------------------------------------------------------------- */
/* The level in use, detected on first call: AVX-512 CPUs run fastnn's kernels for every float32
 * GEMM; AVX2+FMA CPUs run them for GEMMs of fewer than 6 rows (predict at small batches, where
 * OpenBLAS's AVX2 path is 4-5x slower) and the system BLAS for the rest (its AVX2 kernels are
 * faster than ours there); older CPUs use the system BLAS. FASTNN_GEMM=blas|generic|avx2|avx512
 * forces a level (clamped to what the CPU runs), and then every GEMM uses it; avx2+blas is the
 * automatic AVX2 choice on any CPU that runs AVX2. */
static int fnn_gemm_level = -1;
static int fnn_gemm_auto = 1;

static int fnn_gemm_cpu(void) {
    int best = FNN_GEMM_GENERIC;
#ifdef FNN_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = FNN_GEMM_AVX2;
    if (__builtin_cpu_supports("avx512f")) best = FNN_GEMM_AVX512;
#endif
    return best;
}

static inline int fnn_gemm_get_level(void) {
    if (fnn_gemm_level < 0) {
        const int cpu = fnn_gemm_cpu();
        const char *env = getenv("FASTNN_GEMM");
        fnn_gemm_auto = 1;
        fnn_gemm_level = cpu >= FNN_GEMM_AVX2 ? cpu : FNN_GEMM_BLAS;
        if (env && *env) {
            for (int i = 0; i <= FNN_GEMM_AVX512; i++)
                if (strcmp(env, fnn_gemm_names[i]) == 0) {
                    fnn_gemm_level = i < cpu ? i : cpu;
                    fnn_gemm_auto = 0;
                }
            /* what an AVX2 CPU does by itself (the bench's --avx2-blas) */
            if (strcmp(env, "avx2+blas") == 0 && cpu >= FNN_GEMM_AVX2)
                fnn_gemm_level = FNN_GEMM_AVX2;
        }
    }
    return fnn_gemm_level;
}

/* level >= 0 forces it (clamped to the CPU); -1 goes back to the automatic choice. Returns the
 * level in use. */
static inline int fnn_gemm_set_level(int level) {
    fnn_gemm_level = -1;
    fnn_gemm_get_level();
    if (level >= 0) {
        const int cpu = fnn_gemm_cpu();
        fnn_gemm_level = level < cpu ? level : cpu;
        fnn_gemm_auto = 0;
    }
    return fnn_gemm_level;
}

/* 1 if fastnn's kernels compute this float32 GEMM (M rows), 0 for the system BLAS. */
static inline int fnn_gemm_own(ptrdiff_t M) {
    const int level = fnn_gemm_get_level();
    if (level == FNN_GEMM_BLAS) return 0;
    if (level == FNN_GEMM_AVX2 && fnn_gemm_auto && M >= 6) return 0;
    return 1;
}

/* ---- portability ---------------------------------------------------------------------------- */
#if defined(_MSC_VER)
#include <malloc.h>
#define FNN_TLS __declspec(thread)
#define FNN_ALIGN64 __declspec(align(64))
static inline void *fnn_aligned_alloc(size_t bytes) { return _aligned_malloc(bytes, 64); }
static inline void fnn_aligned_free(void *p) { _aligned_free(p); }
#else
#define FNN_TLS _Thread_local
#define FNN_ALIGN64 __attribute__((aligned(64)))
static inline void *fnn_aligned_alloc(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
}
static inline void fnn_aligned_free(void *p) { free(p); }
#endif

/* ---- per-thread pack buffers --------------------------------------------------------------- */
static FNN_TLS float *fnn_gemm_bp = NULL;  /* KC x NC packed B, one per thread, kept */
static FNN_TLS FNN_ALIGN64 float fnn_gemm_edge_a[FNN_GEMM_MAXMR * FNN_GEMM_KC];

static float *fnn_gemm_bbuf(void) {
    if (!fnn_gemm_bp)
        fnn_gemm_bp = (float *)fnn_aligned_alloc(
            (size_t)FNN_GEMM_KC * (FNN_GEMM_NC + FNN_GEMM_MAXNR) * sizeof(float));
    return fnn_gemm_bp;
}

/* Bp <- B[0:kc, 0:nc] (strides brs, bcs) in panels of NR columns, k-major, zero-padded. */
static void fnn_gemm_pack_b(ptrdiff_t kc, ptrdiff_t nc, const float *B, ptrdiff_t brs,
                            ptrdiff_t bcs, float *Bp, int NR) {
    for (ptrdiff_t j0 = 0; j0 < nc; j0 += NR) {
        const ptrdiff_t nr = nc - j0 < NR ? nc - j0 : NR;
        if (bcs == 1) {
            for (ptrdiff_t p = 0; p < kc; p++, Bp += NR) {
                const float *b = B + p * brs + j0;
                ptrdiff_t j = 0;
                for (; j < nr; j++) Bp[j] = b[j];
                for (; j < NR; j++) Bp[j] = 0.0f;
            }
        } else {  /* B^T row-major: column j is contiguous in p; nr streams read in step */
            const float *b = B + j0 * bcs;
            for (ptrdiff_t p = 0; p < kc; p++, Bp += NR) {
                ptrdiff_t j = 0;
                for (; j < nr; j++) Bp[j] = b[j * bcs + p * brs];
                for (; j < NR; j++) Bp[j] = 0.0f;
            }
        }
    }
}

/* C (M x N, row-major, ldc) = (beta1 ? C : 0) + A B, A[i, p] = A[i ars + p acs],
 * B[p, j] = B[p brs + j bcs]. Returns 0, or -1 if the pack buffer could not be allocated (C is
 * then unchanged). Level must not be FNN_GEMM_BLAS. */
static int fnn_sgemm(int level, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A,
                     ptrdiff_t ars, ptrdiff_t acs, const float *B, ptrdiff_t brs, ptrdiff_t bcs,
                     int beta1, float *C, ptrdiff_t ldc) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        if (!beta1)
            for (ptrdiff_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
    fnn_ukr_t ukr = fnn_ukr_generic;
    int MR = 4, NR = 16;
#ifdef FNN_GEMM_X86
    if (level == FNN_GEMM_AVX512) { ukr = fnn_ukr_avx512; MR = 12; NR = 32; }
    else if (level == FNN_GEMM_AVX2) { ukr = fnn_ukr_avx2; MR = 6; NR = 16; }
#endif
    /* fewer rows than MR (AVX2: the rows below a multiple of MR) go through the few-rows kernel
     * when B is row-major (no packing); the tiles take the rest, AVX-512 edges through
     * fnn_ukr_avx512_edge (no padded copy) */
    const int small_ok = bcs == 1 && level >= FNN_GEMM_AVX2 &&
                         (M < MR || level == FNN_GEMM_AVX2);
    const ptrdiff_t Mt = small_ok ? (M / MR) * MR : M;
    float *Bp = NULL;
    if (Mt > 0 && !(Bp = fnn_gemm_bbuf())) return -1;
    float *Ae = fnn_gemm_edge_a;
    FNN_ALIGN64 float tile[FNN_GEMM_MAXMR * FNN_GEMM_MAXNR];
    for (ptrdiff_t jc = 0; jc < N; jc += FNN_GEMM_NC) {
        const ptrdiff_t nc = N - jc < FNN_GEMM_NC ? N - jc : FNN_GEMM_NC;
        for (ptrdiff_t pc = 0; pc < K; pc += FNN_GEMM_KC) {
            const ptrdiff_t kc = K - pc < FNN_GEMM_KC ? K - pc : FNN_GEMM_KC;
            const int acc = beta1 || pc > 0;
            if (Mt > 0) fnn_gemm_pack_b(kc, nc, B + pc * brs + jc * bcs, brs, bcs, Bp, NR);
            for (ptrdiff_t ic = 0; ic < Mt; ic += FNN_GEMM_MC) {
                const ptrdiff_t mc = Mt - ic < FNN_GEMM_MC ? Mt - ic : FNN_GEMM_MC;
                for (ptrdiff_t i0 = 0; i0 < mc; i0 += MR) {
                    const ptrdiff_t mr = mc - i0 < MR ? mc - i0 : MR;
                    for (ptrdiff_t j0 = 0; j0 < nc; j0 += NR) {
                        const ptrdiff_t nr = nc - j0 < NR ? nc - j0 : NR;
                        const float *bp = Bp + (j0 / NR) * kc * NR;
                        const float *a = A + (ic + i0) * ars + pc * acs;
                        float *c = C + (ic + i0) * ldc + jc + j0;
                        if (mr == MR && nr == NR) {
                            ukr(kc, a, ars, acs, bp, c, ldc, acc);
                            continue;
                        }
#ifdef FNN_GEMM_X86
                        if (level == FNN_GEMM_AVX512) {
                            fnn_ukr_avx512_edge((int)mr, nr, kc, a, ars, acs, bp, c, ldc, acc);
                            continue;
                        }
#endif
                        ptrdiff_t as = ars, ac = acs;
                        if (mr < MR) {  /* copy the rows, zero-padded (row-major, ld kc) */
                            for (ptrdiff_t i = 0; i < MR; i++)
                                for (ptrdiff_t p = 0; p < kc; p++)
                                    Ae[i * kc + p] = i < mr ? a[i * ars + p * acs] : 0.0f;
                            a = Ae;
                            as = kc;
                            ac = 1;
                        }
                        ukr(kc, a, as, ac, bp, tile, NR, 0);
                        for (ptrdiff_t i = 0; i < mr; i++)
                            for (ptrdiff_t j = 0; j < nr; j++)
                                c[i * ldc + j] = acc ? c[i * ldc + j] + tile[i * NR + j]
                                                     : tile[i * NR + j];
                    }
                }
            }
#ifdef FNN_GEMM_X86
            for (ptrdiff_t i0 = Mt; i0 < M; ) {
                const ptrdiff_t left = M - i0, m = left >= 4 ? 4 : left;
                const float *a = A + i0 * ars + pc * acs;
                const float *b = B + pc * brs + jc;
                if (level == FNN_GEMM_AVX512)
                    fnn_small_avx512(m, nc, kc, a, ars, acs, b, brs, C + i0 * ldc + jc, ldc, acc);
                else
                    fnn_small_avx2(m, nc, kc, a, ars, acs, b, brs, C + i0 * ldc + jc, ldc, acc);
                i0 += m;
            }
#endif
        }
    }
    return 0;
}
#endif
