/* Hot inner loops of fastnn's kernels, in C so that gcc vectorises them.
 *
 * Built for the x86-64 baseline; on x86 each exported loop is cloned for x86-64-v3 (AVX2+FMA) and
 * x86-64-v4 (AVX-512) and the best clone is chosen at load time (gcc target_clones + ifunc).
 * No -ffast-math anywhere: it would set flush-to-zero for the whole Python process.
 *
 * float32 uses a vectorisable polynomial exp (Cephes expf coefficients, |rel err| < 2e-7 on
 * [-87, 88]) and, built on it, expm1 / log1p / the normal CDF (elu, softplus, gelu); float64 uses
 * libm's exp/tanh/expm1/log1p/erfc so that float64 gradient checks stay exact.
 * Activation codes: enum fnn_activation below.
 */
#ifndef FNN_SIMD_H
#define FNN_SIMD_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The scalar helpers below are inlined into every loop that uses them (always_inline): the loops
 * of fnn_act_forward_* grew past gcc's inlining limits, and a helper left out of line is compiled
 * for the baseline ISA only, so the AVX-512 clone then called scalar SSE2 code (measured: gelu). */
#if defined(__GNUC__) || defined(__clang__)
#define FNN_INLINE static inline __attribute__((always_inline))
#else
#define FNN_INLINE static inline
#endif

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(_M_X64)) && !defined(FNN_NO_CLONES)
#define FNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FNN_CLONES
#endif

/* The activation codes: the one definition. Each X(NAME, name, FROM_Z) entry makes the enum
 * constant FNN_NAME (codes 0, 1, ... in list order), the Python name "name", and FROM_Z: 0 when
 * the derivative is written with the output A = g(Z) (the layers keep only A), 1 when it needs the
 * pre-activation Z (the fused forward kernels then also write Z, see fnn_act_forward_keep_*).
 * activations.pyx hands fnn_activation_names / fnn_activation_from_z to Python
 * (fastnn._activations.activation_codes(), activations_from_z()), from which fastnn/activations.py
 * builds its table. A new activation is one entry here plus one case in each of the two loops
 * below. New entries go at the end (the codes of the others stay). */
#define FNN_ACTIVATION_LIST(X)    \
    X(IDENTITY, identity, 0)      \
    X(RELU, relu, 0)              \
    X(LEAKY_RELU, leaky_relu, 0)  \
    X(SIGMOID, sigmoid, 0)        \
    X(TANH, tanh, 0)              \
    X(ELU, elu, 0)                \
    X(SOFTPLUS, softplus, 0)      \
    X(GELU, gelu, 1)              \
    X(SILU, silu, 1)

#define FNN_ENUM_ENTRY(NAME, name, from_z) FNN_##NAME,
enum fnn_activation { FNN_ACTIVATION_LIST(FNN_ENUM_ENTRY) FNN_ACTIVATION_COUNT };
#undef FNN_ENUM_ENTRY
#define FNN_NAME_ENTRY(NAME, name, from_z) #name,
static const char *const fnn_activation_names[] = { FNN_ACTIVATION_LIST(FNN_NAME_ENTRY) };
#undef FNN_NAME_ENTRY
#define FNN_FROM_Z_ENTRY(NAME, name, from_z) from_z,
static const int fnn_activation_from_z[] = { FNN_ACTIVATION_LIST(FNN_FROM_Z_ENTRY) };
#undef FNN_FROM_Z_ENTRY
/* softplus returns z itself above this (torch.nn.Softplus(beta=1, threshold=20)) */
#define FNN_SOFTPLUS_THRESHOLD 20

/* ---- fast float exp ------------------------------------------------------------------------ */
/* exp(x) = 2^n exp(r), n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2] (ln2 split in two for
 * accuracy). 2^n is applied as 2^(n/2) 2^(n - n/2) so that n = 128 (x up to ln FLT_MAX = 88.7228)
 * stays finite. Below -87.33 the result is 0 (no subnormals), above 88.7228 it is +inf. */
FNN_INLINE float fnn_expf(float x) {
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
FNN_INLINE float fnn_sigmoidf(float x) { return 1.0f / (1.0f + fnn_expf(-x)); }

/* tanh(x) = sign(x) (1 - t) / (1 + t), t = exp(-2|x|); near 0 its Taylor series (no cancellation) */
FNN_INLINE float fnn_tanhf(float x) {
    float ax = fabsf(x);
    float t = fnn_expf(-2.0f * ax);
    float big = (1.0f - t) / (1.0f + t);
    float x2 = x * x;
    float small = ax * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    float y = ax < 0.0625f ? small : big;
    return copysignf(y, x);
}

FNN_INLINE double fnn_sigmoid(double x) {
    /* stable for both signs */
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* expm1(x) = exp(x) - 1 without the cancellation near 0: for |x| < 0.5 its Taylor series to x^8
 * (truncation < 1.1e-8 relative), else fnn_expf(x) - 1 (|result| > 0.39 there, ~2 ulp). Used by
 * elu (x <= 0) and the softplus derivative (x <= 0). */
FNN_INLINE float fnn_expm1f(float x) {
    float p = 2.48015873e-5f;               /* 1/8! */
    p = p * x + 1.98412698e-4f;             /* 1/7! */
    p = p * x + 1.38888889e-3f;             /* 1/6! */
    p = p * x + 8.33333333e-3f;             /* 1/5! */
    p = p * x + 4.16666667e-2f;             /* 1/4! */
    p = p * x + 1.66666667e-1f;             /* 1/3! */
    p = p * x + 0.5f;
    float small = x + x * x * p;
    float big = fnn_expf(x) - 1.0f;
    return fabsf(x) < 0.5f ? small : big;
}

/* log1p(t) for t in [0, 1] (softplus): u = 1 + t, log(u) by Cephes' logf polynomial (the one of
 * Julien Pommier's sse_mathfun; |rel err| ~1e-7) on u or u / 2 (so that the argument is within
 * [sqrt(1/2) - 1, sqrt(2) - 1]), then Goldberg's correction log(u) * t / (u - 1) for the rounding
 * of 1 + t (Goldberg 1991, "What every computer scientist should know about floating-point",
 * Theorem 4); t itself when 1 + t rounds to 1. */
FNN_INLINE float fnn_log1pf01(float t) {
    float u = 1.0f + t;
    int hi = u > 1.41421356f;
    float x = hi ? 0.5f * u - 1.0f : u - 1.0f;
    float e = hi ? 1.0f : 0.0f;
    float z = x * x;
    float y = 7.0376836292E-2f;
    y = y * x - 1.1514610310E-1f;
    y = y * x + 1.1676998740E-1f;
    y = y * x - 1.2420140846E-1f;
    y = y * x + 1.4249322787E-1f;
    y = y * x - 1.6668057665E-1f;
    y = y * x + 2.0000714765E-1f;
    y = y * x - 2.4999993993E-1f;
    y = y * x + 3.3333331174E-1f;
    y = y * x * z;
    y += e * -2.12194440e-4f;
    y += -0.5f * z;
    float lg = x + y + e * 0.693359375f;
    float um1 = u - 1.0f;
    float r = um1 != 0.0f ? lg * (t / um1) : t;
    return r;
}

/* softplus(z) = log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)) (no overflow), z above the
 * threshold 20 returned as is (torch.nn.Softplus(beta=1, threshold=20)). Below z = -87.33 the
 * float32 result is 0 (exp flushed, see fnn_expf), not the subnormal exp(z). */
FNN_INLINE float fnn_softplusf(float z) {
    float y = (z > 0.0f ? z : 0.0f) + fnn_log1pf01(fnn_expf(-fabsf(z)));
    return z > (float)FNN_SOFTPLUS_THRESHOLD ? z : y;
}

/* The standard normal CDF Phi(z) = erfc(-z / sqrt 2) / 2 in float32, for GELU. Three pieces of
 * a = |z|, each a polynomial fitted here (weighted least squares, Lawson iterations, relative
 * error; the tail coefficients rounded to float32 one at a time, each refit after the rounding of
 * the previous ones) against scipy.special.ndtr / erfcx in float64:
 *   a < 0.6:       Phi = 1/2 + z C(z^2)                               (fit error 5e-10)
 *   0.6 <= a < 2:  Phi(-a) = exp(-a^2 / 2) M(a - 1.3)                  (fit error 5e-9)
 *   a >= 2:        Phi(-a) = exp(-a^2 / 2) t T(t), t = 1 / (1 + a / 2) (fit error 1e-8)
 * and Phi(z) = 1 - Phi(-a) for z > 0. The tails are computed as Phi(-a), never as 1 + erf (the
 * cancellation of erf-based GELU for z < 0, e.g. PyTorch's, loses all digits near z = -6).
 * exp(-a^2 / 2) is exp(-ah^2 / 2) exp(-al (a + ah) / 2) with ah = a rounded to 12 bits, so that
 * ah^2 is exact and the rounding of a^2 (relative error up to a^2 * 6e-8 in the result) does not
 * occur. Measured over a dense grid of float32 z: see tests/test_kernels_activations.py. Phi(z) = 0
 * for z <= -12.95 (where it would be below FLT_MIN: no subnormals, as fnn_expf) and 1 above 5.4. */
FNN_INLINE float fnn_ncdff(float z) {
    float a = fabsf(z);
    float z2 = z * z;
    float c = 1.074289976e-04f;
    c = c * z2 - 1.184911816e-03f;
    c = c * z2 + 9.973263368e-03f;
    c = c * z2 - 6.649036705e-02f;
    c = c * z2 + 3.989422917e-01f;
    float central = 0.5f + z * c;
    float x = a - 1.3f;
    float m = -1.287806481e-05f;
    m = m * x + 4.879110202e-05f;
    m = m * x - 1.556730713e-04f;
    m = m * x + 5.428154836e-04f;
    m = m * x - 1.807933440e-03f;
    m = m * x + 5.630520638e-03f;
    m = m * x - 1.635696180e-02f;
    m = m * x + 4.378235713e-02f;
    m = m * x - 1.059880853e-01f;
    m = m * x + 2.253493816e-01f;
    float t = 1.0f / (1.0f + 0.5f * a);
    float q = -3.191838562e-01f;
    q = q * t + 5.186833739e-01f;
    q = q * t - 3.416086733e-01f;
    q = q * t + 2.751483321e-01f;
    q = q * t - 2.165899277e-01f;
    q = q * t - 4.285952076e-02f;
    q = q * t + 4.789577425e-02f;
    q = q * t + 1.497012228e-01f;
    q = q * t + 1.994692981e-01f;
    q = q * t + 1.994711459e-01f;
    q = q * t;
    q = a < 2.0f ? m : q;
    /* ah: a with the low 12 bits of its 24-bit significand cleared (exact square) */
    float ac = a < 12.95f ? a : 12.95f;  /* also keeps inf / NaN out of the split */
    int32_t bits;
    memcpy(&bits, &ac, sizeof(bits));
    bits &= ~(int32_t)0xFFF;
    float ah;
    memcpy(&ah, &bits, sizeof(ah));
    float al = ac - ah;
    float e = fnn_expf(-0.5f * ah * ah) * fnn_expf(-0.5f * al * (ac + ah));
    float tail = a < 12.95f ? e * q : 0.0f; /* Phi(-a), 0 where it is below FLT_MIN */
    float far = z < 0.0f ? tail : 1.0f - tail;
    float y = a < 0.6f ? central : far;
    return z != z ? z : y;                /* NaN stays NaN */
}

/* gelu(z) = z Phi(z) (torch.nn.GELU(approximate="none")) and its derivative from z,
 * gelu'(z) = Phi(z) + z phi(z), phi(z) = exp(-z^2 / 2) / sqrt(2 pi). */
FNN_INLINE float fnn_geluf(float z) { return z * fnn_ncdff(z); }
FNN_INLINE float fnn_gelu_gradf(float z) {
    return fnn_ncdff(z) + z * (0.398942280f * fnn_expf(-0.5f * z * z));
}
FNN_INLINE double fnn_gelu(double z) { return 0.5 * z * erfc(-z * 0.70710678118654752440); }
FNN_INLINE double fnn_gelu_grad(double z) {
    return 0.5 * erfc(-z * 0.70710678118654752440)
           + z * (0.39894228040143267794 * exp(-0.5 * z * z));
}

/* elu(z) = z if z > 0 else alpha (exp(z) - 1) (torch.nn.ELU), expm1 for accuracy near 0 */
FNN_INLINE float fnn_eluf(float z, float alpha) { return z > 0.0f ? z : alpha * fnn_expm1f(z); }
FNN_INLINE double fnn_elu(double z, double alpha) { return z > 0.0 ? z : alpha * expm1(z); }

FNN_INLINE double fnn_softplus(double z) {
    if (z > FNN_SOFTPLUS_THRESHOLD) return z;
    return (z > 0.0 ? z : 0.0) + log1p(exp(-fabs(z)));
}


/* silu(z) = z sigmoid(z) (torch.nn.SiLU; Elfwing et al. 2018, "swish" of Ramachandran et al.),
 * silu'(z) = s (1 + z (1 - s)), s = sigmoid(z), with 1 - s = sigmoid(-z) computed as such (not as
 * 1 - s, which cancels for large z: z (1 - s) is ~1e-6 there, 16 ulp of 1 off in float32). */
FNN_INLINE float fnn_siluf(float z) { return z * fnn_sigmoidf(z); }
FNN_INLINE float fnn_silu_gradf(float z) {
    float e = fnn_expf(-fabsf(z));
    float p = 1.0f / (1.0f + e);        /* sigmoid(|z|) */
    float m = e * p;                    /* sigmoid(-|z|) = e / (1 + e) */
    float s = z >= 0.0f ? p : m;
    float c = z >= 0.0f ? m : p;        /* 1 - s */
    return s * (1.0f + z * c);
}
FNN_INLINE double fnn_silu(double z) { return z * fnn_sigmoid(z); }
FNN_INLINE double fnn_silu_grad(double z) {
    double s = fnn_sigmoid(z);
    return s * (1.0 + z * fnn_sigmoid(-z));
}
FNN_INLINE double fnn_expm1(double x) { return expm1(x); }

/* ---- activations, in place: A = g(Z) --------------------------------------------------------
 * One body for both precisions; SIGMOID, TANH, ... name the scalar functions of each (float32:
 * the polynomial exp above, float64: libm). NaN passes through relu, as in NumPy and PyTorch.
 * Zs: where to keep the pre-activation for the activations whose derivative needs it (FROM_Z in
 * the list: gelu, silu), written in the same loop; NULL (or any other activation) writes nothing,
 * so the others run exactly as without it. fnn_act_forward_* is the same without Zs. */
#define FNN_ACT_FORWARD_BODY(T, Zs, SIGMOID, TANH, ELU, SOFTPLUS, GELU, SILU)                     \
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
    case FNN_ELU:                                                                                 \
        for (i = 0; i < n; i++) Z[i] = ELU(Z[i], alpha);                                          \
        break;                                                                                    \
    case FNN_SOFTPLUS:                                                                            \
        for (i = 0; i < n; i++) Z[i] = SOFTPLUS(Z[i]);                                            \
        break;                                                                                    \
    case FNN_GELU:                                                                                \
        if (Zs) for (i = 0; i < n; i++) { T z = Z[i]; Zs[i] = z; Z[i] = GELU(z); }                \
        else for (i = 0; i < n; i++) Z[i] = GELU(Z[i]);                                          \
        break;                                                                                    \
    case FNN_SILU:                                                                                \
        if (Zs) for (i = 0; i < n; i++) { T z = Z[i]; Zs[i] = z; Z[i] = SILU(z); }                \
        else for (i = 0; i < n; i++) Z[i] = SILU(Z[i]);                                           \
        break;                                                                                    \
    default:                                                                                      \
        break;                                                                                    \
    }
/* Two exported functions (each cloned per ISA), not one calling the other: gcc may specialise a
 * call with a constant argument (Zs = NULL) into a direct call of the baseline clone, bypassing
 * the run-time dispatch (measured: the AVX-512 machine then ran the SSE2 code). */
#define FNN_ACT_FORWARD(T, SUF, ...)                                                              \
FNN_CLONES static void fnn_act_forward_##SUF(T *Z, long n, int kind, T alpha) {                  \
    T *const Zs = (T *)0;                                                                         \
    FNN_ACT_FORWARD_BODY(T, Zs, __VA_ARGS__)                                                      \
}                                                                                                 \
FNN_CLONES static void fnn_act_forward_keep_##SUF(T *Z, T *Zs, long n, int kind, T alpha) {       \
    FNN_ACT_FORWARD_BODY(T, Zs, __VA_ARGS__)                                                      \
}
FNN_ACT_FORWARD(float, f32, fnn_sigmoidf, fnn_tanhf, fnn_eluf, fnn_softplusf, fnn_geluf, fnn_siluf)
FNN_ACT_FORWARD(double, f64, fnn_sigmoid, tanh, fnn_elu, fnn_softplus, fnn_gelu, fnn_silu)

/* ---- activation derivatives: dZ = dA * g'(Z) --------------------------------------------------
 * S is what the layer kept: the output A for the FROM_Z = 0 activations, the pre-activation Z for
 * gelu and silu.
 * relu/leaky (alpha > 0): g'(Z) = A > 0 ? 1 : alpha;  sigmoid: A (1 - A);  tanh: 1 - A^2;
 * elu (alpha > 0): A > 0 ? 1 : A + alpha (= alpha exp(Z));  softplus: A > 20 ? 1 : 1 - exp(-A)
 * (= sigmoid(Z), as -expm1(-A));  gelu: Phi(Z) + Z phi(Z);  silu: s (1 + Z (1 - s)).
 * dZ may alias dA. */
#define FNN_ACT_BACKWARD(T, SUF, EXPM1, GELU_GRAD, SILU_GRAD)                                     \
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
    case FNN_ELU:                                                                                 \
        for (i = 0; i < n; i++) { T a = A[i], d = dA[i]; dZ[i] = a > 0 ? d : d * (a + alpha); }   \
        break;                                                                                    \
    case FNN_SOFTPLUS:                                                                            \
        for (i = 0; i < n; i++) {                                                                 \
            T a = A[i], d = dA[i];                                                                \
            T g = -EXPM1(-a);                                                                     \
            dZ[i] = a > (T)FNN_SOFTPLUS_THRESHOLD ? d : d * g;                                    \
        }                                                                                         \
        break;                                                                                    \
    case FNN_GELU:                                                                                \
        for (i = 0; i < n; i++) dZ[i] = dA[i] * GELU_GRAD(A[i]);                                  \
        break;                                                                                    \
    case FNN_SILU:                                                                                \
        for (i = 0; i < n; i++) dZ[i] = dA[i] * SILU_GRAD(A[i]);                                  \
        break;                                                                                    \
    default:                                                                                      \
        if (dZ != dA) memcpy(dZ, dA, (size_t)n * sizeof(T));                                      \
        break;                                                                                    \
    }                                                                                             \
}
FNN_ACT_BACKWARD(float, f32, fnn_expm1f, fnn_gelu_gradf, fnn_silu_gradf)
FNN_ACT_BACKWARD(double, f64, fnn_expm1, fnn_gelu_grad, fnn_silu_grad)

/* ---- bias: every row of Z (rows x cols, leading dim ld) = b --------------------------------- */
#define FNN_FILL_ROWS(T, SUF)                                                                     \
static inline void fnn_fill_rows_##SUF(T *Z, long rows, long cols, long ld, const T *b) {         \
    for (long r = 0; r < rows; r++) memcpy(Z + r * ld, b, (size_t)cols * sizeof(T));              \
}
FNN_FILL_ROWS(float, f32)
FNN_FILL_ROWS(double, f64)

/* ---- column sums: db[j] (+)= sum_r dZ[r, j] (deterministic) ---------------------------------
 * In slices of FNN_SUM_SLICE rows, as gemm.h sums over K in KC slices: each slice is summed in row
 * order from zero, then added to db in slice order (the first slice overwrites db unless
 * accumulating). A Dense layer's bias and weight gradients are then the same kind of sum, and a
 * batch cut at a multiple of 128 rows (fastnn.distributed's shards) gives the same partial sums. */
#define FNN_SUM_SLICE 128
#define FNN_COL_SUM(T, SUF)                                                                       \
FNN_CLONES static void fnn_col_sum_##SUF(const T *dZ, long rows, long cols, long ld, T *db,       \
                                         int accumulate) {                                        \
    T part[64];                                                                                   \
    if (rows <= 0) {                                                                              \
        if (!accumulate) for (long j = 0; j < cols; j++) db[j] = 0;                               \
        return;                                                                                   \
    }                                                                                             \
    for (long j0 = 0; j0 < cols; j0 += 64) {                                                      \
        const long nj = cols - j0 < 64 ? cols - j0 : 64;                                          \
        T *d = db + j0;                                                                           \
        for (long r0 = 0; r0 < rows; r0 += FNN_SUM_SLICE) {                                       \
            const long r1 = rows - r0 < FNN_SUM_SLICE ? rows : r0 + FNN_SUM_SLICE;                \
            for (long j = 0; j < nj; j++) part[j] = 0;                                            \
            for (long r = r0; r < r1; r++) {                                                      \
                const T *row = dZ + r * ld + j0;                                                  \
                for (long j = 0; j < nj; j++) part[j] += row[j];                                  \
            }                                                                                     \
            if (r0 == 0 && !accumulate)                                                           \
                for (long j = 0; j < nj; j++) d[j] = part[j];                                     \
            else                                                                                  \
                for (long j = 0; j < nj; j++) d[j] += part[j];                                    \
        }                                                                                         \
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
