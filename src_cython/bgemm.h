/* fastnn's bfloat16 GEMM for mixed precision: C (M x N, float32, row-major, ldc) =
 * [C +] bf16(A) bf16(B), A (M x K) and B (K x N) float32 with any strides, each input rounded to
 * bfloat16 (round to nearest even) as it is packed, products summed in float32.
 *
 * Rounding (fnn_f2bf): round to nearest, ties to even; NaN stays a (quiet) NaN; zeros and float32
 * subnormals become a signed zero, as the AVX512_BF16 and AMX instructions treat them (denormals
 * are zero), so every path rounds alike.
 *
 * Design (the layouts of oneDNN's bf16 kernels):
 * - A is rounded into bfloat16, row-major, K padded with zeros to a multiple of 32 (groups of
 *   32-row blocks, ~512 KiB); B into one "VNNI" matrix: pair row q holds (B[2q, j], B[2q + 1, j])
 *   for every column j (Bv[(q * ldb2 + j) * 2 + t]), zero-padded to multiples of 32. These are
 *   the layouts the pair instructions read: vdpbf16ps and AMX's tdpbf16ps multiply two bfloat16
 *   pairs and add both products to one float32 lane. Callers that produce A or B themselves
 *   (a layer's weights once per step, the convolution's im2col block written straight into
 *   bfloat16) pass them already in these layouts (fnn_bgemm_vnni), so nothing is packed twice.
 * - Kernels (chosen once from cpuid; FASTNN_BF16=amx|avx512_bf16|emulated forces one, clamped to
 *   what the CPU runs): AMX (a 32 x 32 block of C in four 16 x 16 tiles, tdpbf16ps), AVX512_BF16
 *   (8 x 32 blocks, 16 zmm accumulators, vdpbf16ps), emulated (the same pairs in float32 FMAs,
 *   for CPUs without either: same rounding of the inputs, a different order of the float32 sums).
 * - The whole of K is summed in the kernel, then stored or added to C in float32: every C element
 *   is a function of (K, the data, the kernel) only, whatever rows or columns a thread takes, so
 *   results do not depend on the number of threads.
 * - Single-threaded, per-thread buffers (thread-local, kept, grown when needed), as gemm.h.
 */
#ifndef FNN_BGEMM_H
#define FNN_BGEMM_H
#include <stdint.h>
#include "gemm.h"
#if defined(FNN_GEMM_X86)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

#define FNN_BGEMM_MB 32

enum { FNN_BF16_EMULATED = 0, FNN_BF16_AVX512 = 1, FNN_BF16_AMX = 2 };
static const char *const fnn_bf16_names[] = {"emulated", "avx512_bf16", "amx"};

/* ---- rounding --------------------------------------------------------------------------------- */
static inline uint16_t fnn_f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);            /* 0, subnormal */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);   /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float fnn_bf2f(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#ifdef FNN_GEMM_X86
/* 16 floats -> 16 bfloat16 in the low 16 bits of each 32-bit lane, fnn_f2bf's rounding. */
__attribute__((target("avx512f"), always_inline)) static inline __m512i fnn_f2bf16x(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i expo = _mm512_and_si512(u, _mm512_set1_epi32(0x7f800000));
    const __m512i mag = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 tiny = _mm512_cmpeq_epi32_mask(expo, _mm512_setzero_si512());
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7f800000));
    __m512i r = _mm512_add_epi32(u, _mm512_set1_epi32(0x7fff));
    r = _mm512_add_epi32(r, _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16),
                                                      _mm512_set1_epi32(0x40)));
    r = _mm512_mask_mov_epi32(r, tiny, _mm512_and_si512(_mm512_srli_epi32(u, 16),
                                                        _mm512_set1_epi32(0x8000)));
    return r;
}
#endif

/* y[0:n] <- x[0:n] rounded to bfloat16 (as float32): simd 0 the scalar rounding, 1 the AVX-512
 * one the packing uses, 2 the hardware's vcvtne2ps2bf16 the bfloat16 im2col uses (the same
 * results; for the tests). Returns 0, or -1 (y untouched) if the CPU lacks what simd asks. */
__attribute__((unused)) static int fnn_round_bf16_array(const float *x, float *y, ptrdiff_t n,
                                                    int simd);

/* ---- kernel selection ------------------------------------------------------------------------- */
static int fnn_bf16_level = -1;

static int fnn_bf16_amx_permitted(void) {
#if defined(FNN_GEMM_X86) && defined(__linux__) && defined(SYS_arch_prctl)
    /* Linux gives a process AMX's tile data state only on request (ARCH_REQ_XCOMP_PERM,
     * XFEATURE_XTILEDATA); idempotent */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return 0;
#endif
}

static int fnn_bf16_cpu(void) {
    int best = FNN_BF16_EMULATED;
#ifdef FNN_GEMM_X86
    unsigned a = 0, b = 0, c = 0, d = 0;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) return best;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) best = FNN_BF16_AVX512;
    if (best == FNN_BF16_AVX512 && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
        (d & (1u << 22)) && (d & (1u << 24)) && fnn_bf16_amx_permitted())
        best = FNN_BF16_AMX;
#endif
    return best;
}

static inline int fnn_bf16_get_level(void) {
    if (fnn_bf16_level < 0) {
        const int cpu = fnn_bf16_cpu();
        const char *env = getenv("FASTNN_BF16");
        fnn_bf16_level = cpu;
        if (env && *env)
            for (int i = 0; i <= FNN_BF16_AMX; i++)
                if (strcmp(env, fnn_bf16_names[i]) == 0) fnn_bf16_level = i < cpu ? i : cpu;
    }
    return fnn_bf16_level;
}

/* level >= 0 forces it (clamped to the CPU); -1 goes back to the automatic choice. */
static inline int fnn_bf16_set_level(int level) {
    fnn_bf16_level = -1;
    fnn_bf16_get_level();
    if (level >= 0) {
        const int cpu = fnn_bf16_cpu();
        fnn_bf16_level = level < cpu ? level : cpu;
    }
    return fnn_bf16_level;
}

/* ---- packing ---------------------------------------------------------------------------------- */
/* Ap (FNN_BGEMM_MB x kcp, row-major) <- bf16(A[0:mr, 0:kc]), zero-padded. */
static void fnn_bgemm_pack_a(int simd, ptrdiff_t mr, ptrdiff_t kc, ptrdiff_t kcp, const float *A,
                             ptrdiff_t ars, ptrdiff_t acs, uint16_t *Ap);
static void fnn_bgemm_pack_b(int simd, ptrdiff_t kc, ptrdiff_t nc, ptrdiff_t kcp, const float *B,
                             ptrdiff_t brs, ptrdiff_t bcs, uint16_t *Bp, ptrdiff_t ldb2,
                             ptrdiff_t pstride);

#ifdef FNN_GEMM_X86
__attribute__((target("avx512f"))) static void
fnn_bgemm_pack_a_avx512(ptrdiff_t mr, ptrdiff_t kc, ptrdiff_t kcp, const float *A, ptrdiff_t ars,
                        uint16_t *Ap) {
    for (ptrdiff_t i = 0; i < mr; i++) {
        const float *a = A + i * ars;
        uint16_t *o = Ap + i * kcp;
        for (ptrdiff_t p = 0; p < kcp; p += 16) {
            const ptrdiff_t left = kc - p;
            const __mmask16 m = left >= 16 ? (__mmask16)0xffff
                                           : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
            const __m512 x = _mm512_maskz_loadu_ps(m, a + p);
            _mm256_storeu_si256((__m256i *)(o + p), _mm512_cvtepi32_epi16(fnn_f2bf16x(x)));
        }
    }
}

/* A^T row-major (ars == 1, A[i, p] = A[i + p acs]): two rows of A^T (k = 2q, 2q + 1) make the
 * pairs of 16 rows of Ap, scattered to their rows. */
__attribute__((target("avx512f"))) static void
fnn_bgemm_pack_at_avx512(ptrdiff_t mr, ptrdiff_t kc, ptrdiff_t kcp, const float *A, ptrdiff_t acs,
                         uint16_t *Ap) {
    const __m512i idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32((int)(kcp / 2)));
    for (ptrdiff_t i0 = 0; i0 < mr; i0 += 16) {
        const ptrdiff_t il = mr - i0;
        const __mmask16 m = il >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << il) - 1);
        int32_t *o = (int32_t *)(Ap + i0 * kcp);
        for (ptrdiff_t q = 0; q < kcp / 2; q++) {
            const ptrdiff_t p = 2 * q;
            const __m512 e = p < kc ? _mm512_maskz_loadu_ps(m, A + p * acs + i0) : _mm512_setzero_ps();
            const __m512 od = p + 1 < kc ? _mm512_maskz_loadu_ps(m, A + (p + 1) * acs + i0)
                                         : _mm512_setzero_ps();
            const __m512i pair = _mm512_or_si512(fnn_f2bf16x(e), _mm512_slli_epi32(fnn_f2bf16x(od), 16));
            _mm512_mask_i32scatter_epi32(o + q, m, idx, pair, 4);
        }
    }
}

/* 16 x 16 transpose of 32-bit lanes in registers (the four-stage unpack / shuffle network) */
__attribute__((target("avx512f"), always_inline)) static inline void fnn_transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/* The B packings, in two builds: _avx512 converts with fnn_f2bf16x (AVX-512F), _hw with the
 * AVX512_BF16 instruction vcvtne2ps2bf16 (the same rounding, checked on every bit-pattern class
 * by the tests), chosen by fnn_bf16_hw(). FNN_PAIRS(e, o): 16 pairs (e[m], o[m]) as 32-bit lanes;
 * FNN_RUN32(lo, hi): 32 consecutive values as 16 pairs. */
#define FNN_DEF_PACK_B(SUF, TARGET, FNN_PAIRS, FNN_RUN32)                                          \
/* B^T row-major (brs == 1, B[p, j] = B[p + j bcs]): 32 values of K of one column are 16 pairs \
 * (adjacent in memory); 16 columns of them are transposed in registers into 16 pair rows. */   \
__attribute__((target(TARGET))) static void                                                   \
fnn_bgemm_pack_bt_##SUF(ptrdiff_t kc, ptrdiff_t nc, ptrdiff_t kcp, const float *B, ptrdiff_t bcs, \
                        uint16_t *Bp, ptrdiff_t ldb2, ptrdiff_t pstride) {                     \
    for (ptrdiff_t j0 = 0; j0 < nc; j0 += 32) {                                               \
        int32_t *panel = (int32_t *)(Bp + (j0 / 32) * pstride);                               \
        for (ptrdiff_t jh = 0; jh < 32; jh += 16)                                             \
            for (ptrdiff_t p = 0; p < kcp; p += 32) {                                         \
                const ptrdiff_t left = kc - p;                                                \
                const __mmask16 m0 = left >= 16 ? (__mmask16)0xffff                           \
                                     : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1); \
                const __mmask16 m1 = left >= 32 ? (__mmask16)0xffff                           \
                                     : left <= 16 ? (__mmask16)0                              \
                                                  : (__mmask16)((1u << (left - 16)) - 1);     \
                __m512 r[16];                                                                 \
                for (int m = 0; m < 16; m++) {                                                \
                    const ptrdiff_t j = j0 + jh + m;                                          \
                    if (j >= nc) {                                                            \
                        r[m] = _mm512_setzero_ps();                                           \
                        continue;                                                             \
                    }                                                                         \
                    const float *b = B + j * bcs + p;                                         \
                    r[m] = _mm512_castsi512_ps(FNN_RUN32(_mm512_maskz_loadu_ps(m0, b),        \
                                                         _mm512_maskz_loadu_ps(m1, b + 16))); \
                }                                                                             \
                fnn_transpose16(r);  /* r[m]: pair row p / 2 + m, columns j0 + jh .. + 15 */  \
                for (int m = 0; m < 16; m++)                                                  \
                    _mm512_storeu_ps((void *)(panel + (p / 2 + m) * ldb2 + jh), r[m]);        \
            }                                                                                 \
    }                                                                                         \
}                                                                                             \
                                                                                              \
__attribute__((target(TARGET))) static void                                                   \
fnn_bgemm_pack_b_##SUF(ptrdiff_t kc, ptrdiff_t nc, ptrdiff_t kcp, const float *B, ptrdiff_t brs, \
                       uint16_t *Bp, ptrdiff_t ldb2, ptrdiff_t pstride) {                      \
    for (ptrdiff_t j0 = 0; j0 < nc; j0 += 32) {                                               \
        uint16_t *panel = Bp + (j0 / 32) * pstride;                                           \
        for (int h = 0; h < 2; h++) {                                                         \
            const ptrdiff_t jl = nc - j0 - 16 * h;                                            \
            const __mmask16 m = jl >= 16 ? (__mmask16)0xffff                                  \
                                         : jl <= 0 ? (__mmask16)0 : (__mmask16)((1u << jl) - 1); \
            for (ptrdiff_t q = 0; q < kcp / 2; q++) {                                         \
                const ptrdiff_t p = 2 * q;                                                    \
                const __m512 e = p < kc ? _mm512_maskz_loadu_ps(m, B + p * brs + j0 + 16 * h) \
                                        : _mm512_setzero_ps();                                \
                const __m512 o = p + 1 < kc                                                   \
                                     ? _mm512_maskz_loadu_ps(m, B + (p + 1) * brs + j0 + 16 * h) \
                                     : _mm512_setzero_ps();                                   \
                _mm512_storeu_si512((void *)(panel + q * 2 * ldb2 + 32 * h), FNN_PAIRS(e, o)); \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

#define FNN_PAIRS_SW(e, o) _mm512_or_si512(fnn_f2bf16x(e), _mm512_slli_epi32(fnn_f2bf16x(o), 16))
#define FNN_RUN32_SW(lo, hi)                                                                      \
    _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(fnn_f2bf16x(lo))),            \
                       _mm512_cvtepi32_epi16(fnn_f2bf16x(hi)), 1)
#define FNN_PAIRS_HW(e, o) _mm512_permutexvar_epi16(fnn_interleave16(), (__m512i)_mm512_cvtne2ps_pbh(o, e))
#define FNN_RUN32_HW(lo, hi) ((__m512i)_mm512_cvtne2ps_pbh(hi, lo))

/* (e0 .. e15, o0 .. o15) as 16-bit lanes -> (e0, o0, e1, o1, ...) */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i
fnn_interleave16(void) {
    return _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                            22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
}

FNN_DEF_PACK_B(avx512, "avx512f,avx512bw", FNN_PAIRS_SW, FNN_RUN32_SW)
FNN_DEF_PACK_B(hw, "avx512f,avx512bw,avx512bf16", FNN_PAIRS_HW, FNN_RUN32_HW)

/* whether the CPU has AVX512_BF16 (vcvtne2ps2bf16), checked once; fnn_bf16_force_sw(1) makes
 * the packings use the AVX-512F rounding instead (for the tests), fnn_bf16_force_sw(0) undoes it */
static int fnn_bf16_hw_flag = -1;
static inline void fnn_bf16_force_sw(int sw) { fnn_bf16_hw_flag = sw ? 0 : -1; }
static inline int fnn_bf16_hw(void) {
    if (fnn_bf16_hw_flag < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        __builtin_cpu_init();
        fnn_bf16_hw_flag = __builtin_cpu_supports("avx512f") &&
                           __builtin_cpu_supports("avx512bw") &&
                           __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
    }
    return fnn_bf16_hw_flag;
}
#else
static inline void fnn_bf16_force_sw(int sw) { (void)sw; }  /* no AVX512_BF16 off x86 */
#endif

static void fnn_bgemm_pack_a(int simd, ptrdiff_t mr, ptrdiff_t kc, ptrdiff_t kcp, const float *A,
                             ptrdiff_t ars, ptrdiff_t acs, uint16_t *Ap) {
#ifdef FNN_GEMM_X86
    if (simd && acs == 1) {
        fnn_bgemm_pack_a_avx512(mr, kc, kcp, A, ars, Ap);
    } else if (simd && ars == 1) {
        fnn_bgemm_pack_at_avx512(mr, kc, kcp, A, acs, Ap);
    } else
#endif
    if (acs == 1) {
        for (ptrdiff_t i = 0; i < mr; i++)
            for (ptrdiff_t p = 0; p < kcp; p++)
                Ap[i * kcp + p] = p < kc ? fnn_f2bf(A[i * ars + p]) : 0;
    } else {  /* A^T row-major (ars == 1): read along the rows of A^T */
        for (ptrdiff_t i = 0; i < mr; i++)
            for (ptrdiff_t p = kc; p < kcp; p++) Ap[i * kcp + p] = 0;
        for (ptrdiff_t p = 0; p < kc; p++) {
            const float *a = A + p * acs;
            for (ptrdiff_t i = 0; i < mr; i++) Ap[i * kcp + p] = fnn_f2bf(a[i * ars]);
        }
    }
    for (ptrdiff_t i = mr; i < FNN_BGEMM_MB; i++) memset(Ap + i * kcp, 0, (size_t)kcp * 2);
}

static void fnn_bgemm_pack_b(int simd, ptrdiff_t kc, ptrdiff_t nc, ptrdiff_t kcp, const float *B,
                             ptrdiff_t brs, ptrdiff_t bcs, uint16_t *Bp, ptrdiff_t ldb2,
                             ptrdiff_t pstride) {
#ifdef FNN_GEMM_X86
    if (simd && bcs == 1) {
        if (fnn_bf16_hw()) fnn_bgemm_pack_b_hw(kc, nc, kcp, B, brs, Bp, ldb2, pstride);
        else fnn_bgemm_pack_b_avx512(kc, nc, kcp, B, brs, Bp, ldb2, pstride);
        return;
    }
    if (simd && brs == 1) {
        if (fnn_bf16_hw()) fnn_bgemm_pack_bt_hw(kc, nc, kcp, B, bcs, Bp, ldb2, pstride);
        else fnn_bgemm_pack_bt_avx512(kc, nc, kcp, B, bcs, Bp, ldb2, pstride);
        return;
    }
#endif
    for (ptrdiff_t j0 = 0; j0 < nc; j0 += 32) {
        uint16_t *panel = Bp + (j0 / 32) * pstride;
        for (ptrdiff_t p = 0; p < kcp; p++) {
            uint16_t *o = panel + (p / 2) * 2 * ldb2 + (p & 1);
            for (ptrdiff_t j = 0; j < 32; j++)
                o[2 * j] = (p < kc && j0 + j < nc) ? fnn_f2bf(B[p * brs + (j0 + j) * bcs]) : 0;
        }
    }
}

#ifdef FNN_GEMM_X86
__attribute__((target("avx512f"))) static void fnn_round_bf16_avx512(const float *x, float *y,
                                                                   ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const ptrdiff_t left = n - i;
        const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        const __m512i r = _mm512_slli_epi32(fnn_f2bf16x(_mm512_maskz_loadu_ps(m, x + i)), 16);
        _mm512_mask_storeu_ps(y + i, m, _mm512_castsi512_ps(r));
    }
}
#endif

#ifdef FNN_GEMM_X86
__attribute__((target("avx512f,avx512bf16"))) static void fnn_round_bf16_hw(const float *x, float *y,
                                                                          ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const ptrdiff_t left = n - i;
        const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        const __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
        const __m512i r = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
        _mm512_mask_storeu_ps(y + i, m, _mm512_castsi512_ps(r));
    }
}
#endif

static int fnn_round_bf16_array(const float *x, float *y, ptrdiff_t n, int simd) {
#ifdef FNN_GEMM_X86
    __builtin_cpu_init();
    if (simd == 2) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        if (!__builtin_cpu_supports("avx512f") || !__get_cpuid_count(7, 1, &a, &b, &c, &d) ||
            !(a & (1u << 5)))
            return -1;
        fnn_round_bf16_hw(x, y, n);
        return 0;
    }
    if (simd && __builtin_cpu_supports("avx512f")) {
        fnn_round_bf16_avx512(x, y, n);
        return 0;
    }
#else
    if (simd == 2) return -1;
#endif
    for (ptrdiff_t i = 0; i < n; i++) y[i] = fnn_bf2f(fnn_f2bf(x[i]));
    return 0;
}

/* ---- kernels: Ct (32 x 32, ld 32) = A (32 x kcp, bf16, row stride lda) B (kcp x 32, VNNI: pair
 * row q at B + q * 2 * ldb2) -------------------------------------------------------------------- */
static void fnn_bukr_emulated(ptrdiff_t mr, ptrdiff_t kcp, const uint16_t *Ap, ptrdiff_t lda,
                              const uint16_t *Bp, ptrdiff_t ldb2, float *Ct) {
    for (ptrdiff_t i = 0; i < mr; i++) {
        float acc[32];
        for (int j = 0; j < 32; j++) acc[j] = 0.0f;
        const uint16_t *a = Ap + i * lda;
        for (ptrdiff_t q = 0; q < kcp / 2; q++) {
            const float a0 = fnn_bf2f(a[2 * q]), a1 = fnn_bf2f(a[2 * q + 1]);
            const uint16_t *b = Bp + q * 2 * ldb2;
            for (int j = 0; j < 32; j++)
                acc[j] = __builtin_fmaf(a1, fnn_bf2f(b[2 * j + 1]),
                                        __builtin_fmaf(a0, fnn_bf2f(b[2 * j]), acc[j]));
        }
        memcpy(Ct + i * 32, acc, sizeof(acc));
    }
}

#ifdef FNN_GEMM_X86
#define FNN_BF_ROW(r)                                                                             \
    { const __m512bh a = (__m512bh)_mm512_set1_epi32(*(const int32_t *)(pa + (r) * lda));         \
      c##r##_0 = _mm512_dpbf16_ps(c##r##_0, a, b0); c##r##_1 = _mm512_dpbf16_ps(c##r##_1, a, b1); }
#define FNN_BF_OUT(r)                                                                             \
    { _mm512_storeu_ps(Ct + (r) * 32, c##r##_0); _mm512_storeu_ps(Ct + (r) * 32 + 16, c##r##_1); }

/* 8 rows of Ct */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
fnn_bukr_avx512_8(ptrdiff_t kcp, const uint16_t *Ap, ptrdiff_t lda, const uint16_t *Bp,
                  ptrdiff_t ldb2, float *Ct) {
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0;
    __m512 c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0;
    __m512 c5_1 = c0_0, c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0;
    const uint16_t *pa = Ap;
    for (ptrdiff_t q = 0; q < kcp / 2; q++, pa += 2, Bp += 2 * ldb2) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)Bp);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(Bp + 32));
        FNN_BF_ROW(0) FNN_BF_ROW(1) FNN_BF_ROW(2) FNN_BF_ROW(3)
        FNN_BF_ROW(4) FNN_BF_ROW(5) FNN_BF_ROW(6) FNN_BF_ROW(7)
    }
    FNN_BF_OUT(0) FNN_BF_OUT(1) FNN_BF_OUT(2) FNN_BF_OUT(3)
    FNN_BF_OUT(4) FNN_BF_OUT(5) FNN_BF_OUT(6) FNN_BF_OUT(7)
}
#undef FNN_BF_ROW
#undef FNN_BF_OUT

static void fnn_bukr_avx512(ptrdiff_t mr, ptrdiff_t kcp, const uint16_t *Ap, ptrdiff_t lda,
                            const uint16_t *Bp, ptrdiff_t ldb2, float *Ct) {
    for (ptrdiff_t i = 0; i < mr; i += 8)
        fnn_bukr_avx512_8(kcp, Ap + i * lda, lda, Bp, ldb2, Ct + i * 32);
}

/* AMX: the palette-1 configuration of eight 16 x 64-byte tiles: 0-3 C (float32), 4-5 A, 6-7 B */
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fnn_tilecfg;

__attribute__((target("amx-tile"))) static void fnn_amx_begin(void) {
    fnn_tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    /* gcc's _tile_loadconfig does not tell the compiler that it reads cfg: without this barrier
     * the stores above are dropped as dead */
    __asm__ __volatile__("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) static void fnn_amx_end(void) { _tile_release(); }

/* Ct or a full 32 x 32 block of C itself (row stride ldc) = / += A B: all 32 rows of A are read
 * (rows past the caller's mr must be readable; their results are not used) */
__attribute__((target("amx-tile,amx-bf16"))) static void
fnn_bukr_amx_c(ptrdiff_t kcp, const uint16_t *Ap, ptrdiff_t lda, const uint16_t *Bp,
               ptrdiff_t ldb2, float *C, ptrdiff_t ldc, int acc, const float *bias) {
    if (bias) {  /* every row starts from the bias: a tile load with row stride 0 */
        _tile_loadd(0, bias, 0);
        _tile_loadd(1, bias + 16, 0);
        _tile_loadd(2, bias, 0);
        _tile_loadd(3, bias + 16, 0);
    } else if (acc) {
        _tile_loadd(0, C, ldc * 4);
        _tile_loadd(1, C + 16, ldc * 4);
        _tile_loadd(2, C + 16 * ldc, ldc * 4);
        _tile_loadd(3, C + 16 * ldc + 16, ldc * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (ptrdiff_t p = 0; p < kcp; p += 32) {
        const uint16_t *b = Bp + p * ldb2;
        _tile_loadd(4, Ap + p, lda * 2);
        _tile_loadd(5, Ap + 16 * lda + p, lda * 2);
        _tile_loadd(6, b, ldb2 * 4);
        _tile_loadd(7, b + 32, ldb2 * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, C, ldc * 4);
    _tile_stored(1, C + 16, ldc * 4);
    _tile_stored(2, C + 16 * ldc, ldc * 4);
    _tile_stored(3, C + 16 * ldc + 16, ldc * 4);
}

__attribute__((target("amx-tile,amx-bf16"))) static void
fnn_bukr_amx(ptrdiff_t kcp, const uint16_t *Ap, ptrdiff_t lda, const uint16_t *Bp, ptrdiff_t ldb2,
             float *Ct) {
    fnn_bukr_amx_c(kcp, Ap, lda, Bp, ldb2, Ct, 32, 0, NULL);
}
#endif

static inline void fnn_bukr(int level, ptrdiff_t mr, ptrdiff_t kcp, const uint16_t *Ap,
                            ptrdiff_t lda, const uint16_t *Bp, ptrdiff_t ldb2, float *Ct) {
#ifdef FNN_GEMM_X86
    if (level == FNN_BF16_AMX) { fnn_bukr_amx(kcp, Ap, lda, Bp, ldb2, Ct); return; }
    if (level == FNN_BF16_AVX512) { fnn_bukr_avx512(mr, kcp, Ap, lda, Bp, ldb2, Ct); return; }
#endif
    (void)level;
    fnn_bukr_emulated(mr, kcp, Ap, lda, Bp, ldb2, Ct);
}

/* C[ic:ic+mr, j:j+nr] (or, ctrans, its transpose at C[j ldc + i]) = / += Ct */
#ifdef FNN_GEMM_X86
/* the transposed store of Ct through 16 x 16 in-register transposes */
__attribute__((target("avx512f"))) static void
fnn_bgemm_store_t_avx512(const float *Ct, ptrdiff_t mr, ptrdiff_t nr, int acc, float *C,
                         ptrdiff_t ldc) {
    for (ptrdiff_t i0 = 0; i0 < mr; i0 += 16) {
        const ptrdiff_t il = mr - i0;
        const __mmask16 m = il >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << il) - 1u);
        for (ptrdiff_t j0 = 0; j0 < nr; j0 += 16) {
            __m512 r[16];
            for (int k = 0; k < 16; k++) r[k] = _mm512_loadu_ps(Ct + (i0 + k) * 32 + j0);
            fnn_transpose16(r);  /* r[jj]: column j0 + jj of Ct, rows i0 .. i0 + 15 */
            const ptrdiff_t jl = nr - j0 < 16 ? nr - j0 : 16;
            for (ptrdiff_t jj = 0; jj < jl; jj++) {
                float *cj = C + (j0 + jj) * ldc + i0;
                _mm512_mask_storeu_ps(cj, m, acc ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, cj), r[jj])
                                                 : r[jj]);
            }
        }
    }
}
#endif

static inline void fnn_bgemm_store(const float *Ct, ptrdiff_t mr, ptrdiff_t nr, int acc, float *C,
                                   ptrdiff_t ldc, ptrdiff_t ic, ptrdiff_t j, int ctrans,
                                   const float *bias) {
    if (bias) {  /* C = bias + Ct (not transposed) */
        float *c = C + ic * ldc + j;
        for (ptrdiff_t i = 0; i < mr; i++)
            for (ptrdiff_t jj = 0; jj < nr; jj++) c[i * ldc + jj] = bias[jj] + Ct[i * 32 + jj];
        return;
    }
#ifdef FNN_GEMM_X86
    if (ctrans && fnn_bf16_hw()) {  /* an AVX-512 CPU (fnn_bf16_hw implies it) */
        fnn_bgemm_store_t_avx512(Ct, mr, nr, acc, C + j * ldc + ic, ldc);
        return;
    }
#endif
    if (ctrans) {
        float *c = C + j * ldc + ic;
        for (ptrdiff_t jj = 0; jj < nr; jj++) {
            float *cj = c + jj * ldc;
            if (acc)
                for (ptrdiff_t i = 0; i < mr; i++) cj[i] += Ct[i * 32 + jj];
            else
                for (ptrdiff_t i = 0; i < mr; i++) cj[i] = Ct[i * 32 + jj];
        }
        return;
    }
    float *c = C + ic * ldc + j;
    for (ptrdiff_t i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        const float *t = Ct + i * 32;
        if (acc)
            for (ptrdiff_t jj = 0; jj < nr; jj++) ci[jj] += t[jj];
        else
            for (ptrdiff_t jj = 0; jj < nr; jj++) ci[jj] = t[jj];
    }
}

/* ---- per-thread pack buffers ------------------------------------------------------------------ */
static FNN_TLS uint16_t *fnn_bgemm_bw = NULL;  /* B over the whole of K (fnn_bgemm) */
static FNN_TLS size_t fnn_bgemm_bw_size = 0;   /* its size in values */
static FNN_TLS uint16_t *fnn_bgemm_aw = NULL;  /* A over the whole of K (fnn_bgemm_vnni) */
static FNN_TLS size_t fnn_bgemm_aw_size = 0;   /* its size in values */

/* B (K x N, B[p, j] = B[p brs + j bcs]) rounded into the VNNI layout in panels of 32 columns:
 * pair row q (K indices 2q, 2q + 1) of panel P holds (B[2q, 32P + j], B[2q + 1, 32P + j]) for
 * j = 0..31 at Bpk[P Kp 32 + (q 32 + j) 2 + t], Kp = roundup(K, 32), zero-padded (K to Kp, N to
 * a multiple of 32): Kp * roundup(N, 32) values. A panel is contiguous, so the GEMM streams it
 * (a VNNI matrix with long rows would put every tile row in another page). */
static void fnn_bgemm_pack_full(ptrdiff_t K, ptrdiff_t N, const float *B, ptrdiff_t brs,
                                ptrdiff_t bcs, uint16_t *Bpk) {
    int simd = 0;
#ifdef FNN_GEMM_X86
    __builtin_cpu_init();
    simd = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#endif
    const ptrdiff_t Kp = (K + 31) / 32 * 32;
    fnn_bgemm_pack_b(simd, K, N, Kp, B, brs, bcs, Bpk, 32, Kp * 32);
}

/* kc <= 32 rows of a K x N weight matrix W (row-major, the rows from a multiple of 32 on, kc < 32
 * only for the last chunk) into both of its packings: the 16 pair rows they make in every panel
 * of W's (Wpk: the chunk's pair rows of the first panel; panel stride Kp 32) and the panel of 32
 * columns they make in W^T's (WTpk: that panel; Np = roundup(N, 32) rows). The rows past kc (up
 * to 32) are zeros in both, as fnn_bgemm_pack_full writes them. */
static void fnn_bgemm_pack_rows(ptrdiff_t kc, ptrdiff_t N, const float *W, ptrdiff_t Np,
                                ptrdiff_t Kp, uint16_t *Wpk, uint16_t *WTpk) {
    int simd = 0;
#ifdef FNN_GEMM_X86
    __builtin_cpu_init();
    simd = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#endif
    fnn_bgemm_pack_b(simd, kc, N, 32, W, N, 1, Wpk, 32, Kp * 32);
    fnn_bgemm_pack_b(simd, N, kc, Np, W, 1, N, WTpk, 32, Np * 32);
}

/* C (M x N, row-major, ldc) = (beta1 ? C : 0) + bf16(A) Bv, Bv a K x N matrix in the VNNI layout:
 * pair row q (K indices 2q, 2q + 1) of the 32-column block at Bv + (j / 32) pstride is at
 * q 2 ldb2, holding the pairs of its 32 columns (fnn_bgemm_pack_full's panels: ldb2 32, pstride
 * Kp 32; one VNNI matrix with rows of ldb2 pairs: pstride 64); zero in the K padding, columns up
 * to roundup(N, 32) readable. A is either A16, already bfloat16, row-major with row stride lda16 (zeros in
 * columns K .. roundup(K, 32); rows up to roundup(M, 32) readable, those past M unused), or, when
 * A16 is NULL, float32 A[i ars + p acs], rounded here. The whole of K is summed in the kernel
 * (every C element is a function of K, the data and the kernel only), then stored or added in
 * float32. ctrans: C is stored transposed (C[i, j] at C[j ldc + i]). bias (N values, not with
 * ctrans; NULL: none): C = bias (on every row) + bf16(A) Bv, beta1 ignored; the AMX kernel
 * starts its tiles from it. Returns 0, or -1 if a buffer could not be allocated (C is then
 * unchanged). fnn_bgemm_vnni: the same without a bias. */
static int fnn_bgemm_vnni_bias(int level, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A,
                               ptrdiff_t ars, ptrdiff_t acs, const uint16_t *A16,
                               ptrdiff_t lda16, const uint16_t *Bv, ptrdiff_t ldb2,
                               ptrdiff_t pstride, int beta1, const float *bias, float *C,
                               ptrdiff_t ldc, int ctrans) {
    if (M <= 0 || N <= 0) return 0;
    const ptrdiff_t Kp = (K + 31) / 32 * 32;
    if (K <= 0) {
        for (ptrdiff_t i = 0; i < M && (!beta1 || bias); i++)
            for (ptrdiff_t j = 0; j < N; j++)
                C[ctrans ? j * ldc + i : i * ldc + j] = bias ? bias[j] : 0.0f;
        return 0;
    }
    /* row groups of A: as many 32-row blocks as fit ~512 KiB of bfloat16 */
    ptrdiff_t G = (ptrdiff_t)(262144 / (Kp > 0 ? Kp : 1)) / 32 * 32;
    if (G < 32) G = 32;
    const ptrdiff_t Mp = (M + 31) / 32 * 32;
    if (G > Mp) G = Mp;
    if (!A16) {
        const size_t need = (size_t)G * (size_t)Kp;
        if (fnn_bgemm_aw_size < need) {
            fnn_aligned_free(fnn_bgemm_aw);
            fnn_bgemm_aw = (uint16_t *)fnn_aligned_alloc(need * 2);
            fnn_bgemm_aw_size = fnn_bgemm_aw ? need : 0;
        }
        if (!fnn_bgemm_aw) return -1;
    }
    const int simd = level >= FNN_BF16_AVX512;
    FNN_ALIGN64 float Ct[FNN_BGEMM_MB * 32];
#ifdef FNN_GEMM_X86
    if (level == FNN_BF16_AMX) fnn_amx_begin();
#endif
    for (ptrdiff_t g0 = 0; g0 < M; g0 += G) {
        const ptrdiff_t gm = M - g0 < G ? M - g0 : G;
        const uint16_t *Ag;
        ptrdiff_t lda;
        if (A16) {
            Ag = A16 + g0 * lda16;
            lda = lda16;
        } else {
            for (ptrdiff_t i = 0; i < gm; i += FNN_BGEMM_MB) {
                const ptrdiff_t mr = gm - i < FNN_BGEMM_MB ? gm - i : FNN_BGEMM_MB;
                fnn_bgemm_pack_a(simd, mr, K, Kp, A + (g0 + i) * ars, ars, acs,
                                 fnn_bgemm_aw + i * Kp);
            }
            Ag = fnn_bgemm_aw;
            lda = Kp;
        }
        for (ptrdiff_t j0 = 0; j0 < N; j0 += 32) {
            const ptrdiff_t nr = N - j0 < 32 ? N - j0 : 32;
            for (ptrdiff_t i = 0; i < gm; i += FNN_BGEMM_MB) {
                const ptrdiff_t mr = gm - i < FNN_BGEMM_MB ? gm - i : FNN_BGEMM_MB;
                const uint16_t *bp = Bv + (j0 / 32) * pstride;
#ifdef FNN_GEMM_X86
                if (level == FNN_BF16_AMX && !ctrans && mr == 32 && nr == 32) {
                    /* C's block starts from C itself when accumulating (or from the bias):
                     * C + p1 + p2 + ..., a function of K, the data and the kernel as before */
                    fnn_bukr_amx_c(Kp, Ag + i * lda, lda, bp, ldb2, C + (g0 + i) * ldc + j0, ldc,
                                   beta1, bias ? bias + j0 : NULL);
                    continue;
                }
#endif
                fnn_bukr(level, mr, Kp, Ag + i * lda, lda, bp, ldb2, Ct);
                fnn_bgemm_store(Ct, mr, nr, beta1, C, ldc, g0 + i, j0, ctrans,
                                bias ? bias + j0 : NULL);
            }
        }
    }
#ifdef FNN_GEMM_X86
    if (level == FNN_BF16_AMX) fnn_amx_end();
#endif
    return 0;
}

static int fnn_bgemm_vnni(int level, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A,
                          ptrdiff_t ars, ptrdiff_t acs, const uint16_t *A16, ptrdiff_t lda16,
                          const uint16_t *Bv, ptrdiff_t ldb2, ptrdiff_t pstride, int beta1,
                          float *C, ptrdiff_t ldc, int ctrans) {
    return fnn_bgemm_vnni_bias(level, M, N, K, A, ars, acs, A16, lda16, Bv, ldb2, pstride, beta1,
                               NULL, C, ldc, ctrans);
}

/* C (M x N, row-major, ldc) = (beta1 ? C : 0) + bf16(A) bf16(B), A[i, p] = A[i ars + p acs],
 * B[p, j] = B[p brs + j bcs]: B is rounded into per-thread panels (fnn_bgemm_pack_full's layout),
 * then fnn_bgemm_vnni; or, when Bpk is not NULL, B's columns from panel panel0 on of a matrix
 * packed by fnn_bgemm_pack_full (B, brs, bcs, np unused): the same numbers, so packing once or
 * per call gives the same bits. ctrans: C is stored transposed (C[i, j] at C[j ldc + i]).
 * Returns 0, or -1 if a pack buffer could not be allocated (C is then unchanged). */
static int fnn_bgemm(int level, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A,
                     ptrdiff_t ars, ptrdiff_t acs, const float *B, ptrdiff_t brs, ptrdiff_t bcs,
                     int beta1, float *C, ptrdiff_t ldc, const uint16_t *Bpk, ptrdiff_t np,
                     ptrdiff_t panel0, int ctrans) {
    const ptrdiff_t Kp = (K + 31) / 32 * 32;
    (void)np;
    if (Bpk)
        return fnn_bgemm_vnni(level, M, N, K, A, ars, acs, NULL, 0, Bpk + panel0 * Kp * 32, 32,
                              Kp * 32, beta1, C, ldc, ctrans);
    if (M <= 0 || N <= 0 || K <= 0)
        return fnn_bgemm_vnni(level, M, N, K, A, ars, acs, NULL, 0, NULL, 32, 0, beta1, C, ldc,
                              ctrans);
    const size_t need = (size_t)Kp * (size_t)((N + 31) / 32 * 32);
    if (fnn_bgemm_bw_size < need) {
        fnn_aligned_free(fnn_bgemm_bw);
        fnn_bgemm_bw = (uint16_t *)fnn_aligned_alloc(need * 2);
        fnn_bgemm_bw_size = fnn_bgemm_bw ? need : 0;
    }
    if (!fnn_bgemm_bw) return -1;
    fnn_bgemm_pack_b(level >= FNN_BF16_AVX512, K, N, Kp, B, brs, bcs, fnn_bgemm_bw, 32, Kp * 32);
    return fnn_bgemm_vnni(level, M, N, K, A, ars, acs, NULL, 0, fnn_bgemm_bw, 32, Kp * 32, beta1,
                          C, ldc, ctrans);
}
#endif
