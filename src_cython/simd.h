/* Hot inner loops of fastnn's kernels, in C so that gcc vectorises them.
 *
 * Built for the x86-64 baseline; on x86 each exported loop is cloned for x86-64-v3 (AVX2+FMA) and
 * x86-64-v4 (AVX-512) and the best clone is chosen at load time (gcc target_clones + ifunc).
 * No -ffast-math anywhere: it would set flush-to-zero for the whole Python process.
 *
 * float32 uses a vectorisable polynomial exp (Cephes expf coefficients, |rel err| < 2e-7 on
 * [-87, 88]); float64 uses libm's exp/tanh so that float64 gradient checks stay exact.
 * Activation codes: enum fnn_activation below.
 */
#ifndef FNN_SIMD_H
#define FNN_SIMD_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(_M_X64)) && !defined(FNN_NO_CLONES)
#define FNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FNN_CLONES
#endif

/* The activation codes: the one definition. Each X(NAME, name) entry makes the enum constant
 * FNN_NAME (codes 0, 1, ... in list order) and the Python name "name"; activations.pyx hands
 * fnn_activation_names to Python (fastnn._activations.activation_codes()), from which
 * fastnn/activations.py builds its table. A new activation whose derivative comes from its output
 * is one entry here plus one case in each of the two loops below. */
#define FNN_ACTIVATION_LIST(X) \
    X(IDENTITY, identity)      \
    X(RELU, relu)              \
    X(LEAKY_RELU, leaky_relu)  \
    X(SIGMOID, sigmoid)        \
    X(TANH, tanh)

#define FNN_ENUM_ENTRY(NAME, name) FNN_##NAME,
enum fnn_activation { FNN_ACTIVATION_LIST(FNN_ENUM_ENTRY) FNN_ACTIVATION_COUNT };
#undef FNN_ENUM_ENTRY
#define FNN_NAME_ENTRY(NAME, name) #name,
static const char *const fnn_activation_names[] = { FNN_ACTIVATION_LIST(FNN_NAME_ENTRY) };
#undef FNN_NAME_ENTRY

/* ---- fast float exp ------------------------------------------------------------------------ */
/* exp(x) = 2^n exp(r), n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2] (ln2 split in two for
 * accuracy). 2^n is applied as 2^(n/2) 2^(n - n/2) so that n = 128 (x up to ln FLT_MAX = 88.7228)
 * stays finite. Below -87.33 the result is 0 (no subnormals), above 88.7228 it is +inf. */
static inline float fnn_expf(float x) {
    const float hi = 88.7228f, lo = -87.33f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    /* round to nearest by the 1.5 * 2^23 trick: vectorises on SSE2, no rounding instruction */
    float fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    int32_t n = (int32_t)fn;
    int32_t n1 = n >> 1, n2 = n - n1;
    int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof(s1));
    memcpy(&s2, &b2, sizeof(s2));
    float y = (p * s1) * s2;
    y = x > hi ? (float)INFINITY : y;
    return x < lo ? 0.0f : y;
}

/* sigmoid(x) = 1 / (1 + exp(-x)): exactly 0 below -88.72 (exp(-x) = inf), 1 above 17 */
static inline float fnn_sigmoidf(float x) { return 1.0f / (1.0f + fnn_expf(-x)); }

/* tanh(x) = sign(x) (1 - t) / (1 + t), t = exp(-2|x|); near 0 its Taylor series (no cancellation) */
static inline float fnn_tanhf(float x) {
    float ax = fabsf(x);
    float t = fnn_expf(-2.0f * ax);
    float big = (1.0f - t) / (1.0f + t);
    float x2 = x * x;
    float small = ax * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    float y = ax < 0.0625f ? small : big;
    return copysignf(y, x);
}

static inline double fnn_sigmoid(double x) {
    /* stable for both signs */
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* ---- activations, in place: A = g(Z) --------------------------------------------------------
 * One body for both precisions; SIGMOID and TANH name the scalar functions of each (float32: the
 * polynomial exp above, float64: libm). NaN passes through relu, as in NumPy and PyTorch. */
#define FNN_ACT_FORWARD(T, SUF, SIGMOID, TANH)                                                    \
FNN_CLONES static void fnn_act_forward_##SUF(T *Z, long n, int kind, T alpha) {                  \
    long i;                                                                                       \
    switch (kind) {                                                                               \
    case FNN_RELU:                                                                                \
        for (i = 0; i < n; i++) { T z = Z[i]; Z[i] = z < (T)0 ? (T)0 : z; }                       \
        break;                                                                                    \
    case FNN_LEAKY_RELU:                                                                          \
        for (i = 0; i < n; i++) { T z = Z[i]; Z[i] = z < (T)0 ? alpha * z : z; }                  \
        break;                                                                                    \
    case FNN_SIGMOID:                                                                             \
        for (i = 0; i < n; i++) Z[i] = SIGMOID(Z[i]);                                             \
        break;                                                                                    \
    case FNN_TANH:                                                                                \
        for (i = 0; i < n; i++) Z[i] = TANH(Z[i]);                                                \
        break;                                                                                    \
    default:                                                                                      \
        break;                                                                                    \
    }                                                                                             \
}
FNN_ACT_FORWARD(float, f32, fnn_sigmoidf, fnn_tanhf)
FNN_ACT_FORWARD(double, f64, fnn_sigmoid, tanh)

/* ---- activation derivatives from the OUTPUT A: dZ = dA * g'(Z) ------------------------------
 * relu/leaky (alpha > 0): g'(Z) = A > 0 ? 1 : alpha;  sigmoid: A (1 - A);  tanh: 1 - A^2.
 * dZ may alias dA. */
#define FNN_ACT_BACKWARD(T, SUF)                                                                  \
FNN_CLONES static void fnn_act_backward_##SUF(const T *A, const T *dA, T *dZ, long n, int kind,  \
                                              T alpha) {                                          \
    long i;                                                                                       \
    switch (kind) {                                                                               \
    case FNN_RELU:                                                                                \
        for (i = 0; i < n; i++) { T d = dA[i]; dZ[i] = A[i] > 0 ? d : (T)0; }                     \
        break;                                                                                    \
    case FNN_LEAKY_RELU:                                                                          \
        for (i = 0; i < n; i++) { T d = dA[i]; dZ[i] = A[i] > 0 ? d : alpha * d; }                \
        break;                                                                                    \
    case FNN_SIGMOID:                                                                             \
        for (i = 0; i < n; i++) { T a = A[i]; dZ[i] = dA[i] * a * ((T)1 - a); }                   \
        break;                                                                                    \
    case FNN_TANH:                                                                                \
        for (i = 0; i < n; i++) { T a = A[i]; dZ[i] = dA[i] * ((T)1 - a * a); }                   \
        break;                                                                                    \
    default:                                                                                      \
        if (dZ != dA) memcpy(dZ, dA, (size_t)n * sizeof(T));                                      \
        break;                                                                                    \
    }                                                                                             \
}
FNN_ACT_BACKWARD(float, f32)
FNN_ACT_BACKWARD(double, f64)

/* ---- bias: every row of Z (rows x cols, leading dim ld) = b --------------------------------- */
#define FNN_FILL_ROWS(T, SUF)                                                                     \
static inline void fnn_fill_rows_##SUF(T *Z, long rows, long cols, long ld, const T *b) {         \
    for (long r = 0; r < rows; r++) memcpy(Z + r * ld, b, (size_t)cols * sizeof(T));              \
}
FNN_FILL_ROWS(float, f32)
FNN_FILL_ROWS(double, f64)

/* ---- column sums: db[j] (+)= sum_r dZ[r, j], rows summed in order (deterministic) ------------ */
#define FNN_COL_SUM(T, SUF)                                                                       \
FNN_CLONES static void fnn_col_sum_##SUF(const T *dZ, long rows, long cols, long ld, T *db,       \
                                         int accumulate) {                                        \
    if (!accumulate) for (long j = 0; j < cols; j++) db[j] = 0;                                   \
    for (long r = 0; r < rows; r++) {                                                             \
        const T *row = dZ + r * ld;                                                               \
        for (long j = 0; j < cols; j++) db[j] += row[j];                                          \
    }                                                                                             \
}
FNN_COL_SUM(float, f32)
FNN_COL_SUM(double, f64)

/* ---- softmax + cross-entropy, one row ----------------------------------------------------------
 * loss = logsumexp(z) - z[label]; dz = scale * (softmax(z) - onehot(label)) (dz may be NULL).
 * Stable: exp(z - max z). Returns the loss in double. EXP is the precision's exp; SUM_PRAGMA lets
 * the float32 sum be vectorised (float64 sums in index order). */
#define FNN_SOFTMAX_CE_ROW(T, SUF, EXP, SUM_PRAGMA)                                               \
FNN_CLONES static double fnn_softmax_ce_row_##SUF(const T *z, long K, long label, T *dz, T scale, \
                                                  T *prob) {                                      \
    T m = z[0];                                                                                   \
    _Pragma("omp simd reduction(max:m)")                                                          \
    for (long k = 0; k < K; k++) m = z[k] > m ? z[k] : m;                                         \
    T s = 0;                                                                                      \
    T *e = dz ? dz : prob;                                                                        \
    SUM_PRAGMA                                                                                    \
    for (long k = 0; k < K; k++) { T v = EXP(z[k] - m); e[k] = v; s += v; }                       \
    T inv = (T)1 / s;                                                                             \
    if (prob) {                                                                                   \
        for (long k = 0; k < K; k++) prob[k] = e[k] * inv;                                        \
    }                                                                                             \
    if (dz) {                                                                                     \
        T c = scale * inv;                                                                        \
        for (long k = 0; k < K; k++) dz[k] *= c;                                                  \
        if (label >= 0) dz[label] -= scale;                                                       \
    }                                                                                             \
    if (label < 0) return 0.0;                                                                    \
    return log((double)s) + (double)m - (double)z[label];                                         \
}
FNN_SOFTMAX_CE_ROW(float, f32, fnn_expf, _Pragma("omp simd reduction(+:s)"))
FNN_SOFTMAX_CE_ROW(double, f64, exp, )

/* ---- softmax + cross-entropy, a block of rows (float32) ----------------------------------------
 * The formulas of fnn_softmax_ce_row_f32 for each row (labels in [0, K), dz required), but the
 * exponentials of the whole block are one flat loop: with few classes (K = 10) the per-row loop is
 * too short to vectorise, and the scalar expf costs ~30 cycles. dz holds z - max first, then exp,
 * then the gradient. The row sums run in index order (no vector partial sums), so the result does
 * not depend on the clone. */
FNN_CLONES static void fnn_softmax_ce_rows_f32(const float *z, long rows, long K,
                                               const int64_t *labels, float *dz, float scale,
                                               double *row_loss) {
    for (long r = 0; r < rows; r++) { /* row max, kept in row_loss until the last pass */
        const float *zr = z + r * K;
        float *dr = dz + r * K;
        float m = zr[0];
        for (long k = 1; k < K; k++) m = zr[k] > m ? zr[k] : m;
        for (long k = 0; k < K; k++) dr[k] = zr[k] - m;
        row_loss[r] = (double)m;
    }
    const long n = rows * K;
    for (long i = 0; i < n; i++) dz[i] = fnn_expf(dz[i]);
    for (long r = 0; r < rows; r++) {
        const float *zr = z + r * K;
        float *dr = dz + r * K;
        float s = 0.0f;
        const double m = row_loss[r];
        for (long k = 0; k < K; k++) s += dr[k];
        const float c = scale * (1.0f / s);
        for (long k = 0; k < K; k++) dr[k] *= c;
        const long label = (long)labels[r];
        dr[label] -= scale;
        row_loss[r] = log((double)s) + m - (double)zr[label];
    }
}

/* Which clone the loader picked, for show_config(). */
static inline const char *fnn_simd_path(void) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FNN_NO_CLONES)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2+FMA)";
    return "x86-64 baseline (SSE2)";
#else
    return "compiler default (no run-time dispatch)";
#endif
}
#endif
