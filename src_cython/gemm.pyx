"""fastnn's own GEMM (``gemm.h``) as a Python-callable kernel, for tests and the bench.

Kernels only: the caller passes C-contiguous arrays; shapes are re-checked here (with the GIL) so
that a wrong call raises ``ValueError`` instead of writing out of bounds.
"""
from cython cimport floating
from cython.parallel cimport prange
from _blas cimport gemm_rm, gemm_kernel_name, bf16_kernel_name, fnn_bgemm_pack_full

cdef extern from "gemm.h" nogil:
    double fnn_fma_peak_run(long reps, float *sink)

cdef extern from "bgemm.h" nogil:
    int fnn_round_bf16_array(const float *x, float *y, Py_ssize_t n, int simd)
    void fnn_bf16_force_sw(int sw)
    void fnn_bgemm_pack_rows(Py_ssize_t kc, Py_ssize_t N, const float *W, Py_ssize_t Np,
                             Py_ssize_t Kp, unsigned short *Wpk, unsigned short *WTpk)


def packed_bf16_size(Py_ssize_t K, Py_ssize_t N):
    """Number of uint16 values of a (K, N) matrix packed by :func:`pack_bf16`."""
    if K < 0 or N < 0:
        raise ValueError(f"packed_bf16_size: K and N must be >= 0, got {K}, {N}")
    return ((K + 31) // 32) * 32 * ((N + 31) // 32) * 32


def _force_sw_rounding(bint sw):
    """Testing hook: ``True`` makes the packing of B round with its AVX-512F code even on a CPU
    with AVX512_BF16 (whose vcvtne2ps2bf16 it uses otherwise); ``False`` undoes it."""
    fnn_bf16_force_sw(sw)


def pack_bf16(const float[:, ::1] B not None, bint trans, unsigned short[::1] out not None,
              int num_threads=1):
    """out <- op(B) (K, N) rounded to bfloat16 and packed for the bfloat16 GEMM's B operand (op(B)
    is B, or B's transpose when ``trans``): a layer's weights, converted once per step and reused
    by every block of its GEMMs. ``out`` has :func:`packed_bf16_size` (K, N) values. The panels
    of 32 columns are shared among ``num_threads`` OpenMP threads (each panel is the same
    whichever thread packs it)."""
    cdef Py_ssize_t K = B.shape[1] if trans else B.shape[0]
    cdef Py_ssize_t N = B.shape[0] if trans else B.shape[1]
    cdef Py_ssize_t brs = 1 if trans else B.shape[1], bcs = B.shape[1] if trans else 1
    cdef Py_ssize_t Kp = (K + 31) // 32 * 32, npan = (N + 31) // 32
    cdef Py_ssize_t per = 4, ng, i, j0, nc
    if out.shape[0] != packed_bf16_size(K, N):
        raise ValueError(f"pack_bf16: out has {out.shape[0]} values, a ({K}, {N}) matrix needs "
                         f"{packed_bf16_size(K, N)}")
    if num_threads < 1:
        raise ValueError(f"pack_bf16: num_threads must be >= 1, got {num_threads}")
    if K == 0 or N == 0:
        return
    ng = (npan + per - 1) // per  # groups of 4 panels (128 columns)
    with nogil:
        for i in prange(ng, num_threads=num_threads, schedule='static',
                        use_threads_if=K * N >= 65536):
            j0 = i * per * 32
            nc = N - j0 if N - j0 < per * 32 else per * 32
            fnn_bgemm_pack_full(K, nc, &B[0, 0] + j0 * bcs, brs, bcs, &out[0] + j0 * Kp)


def pack_bf16_pair(const float[:, ::1] W not None, unsigned short[::1] Wpk not None,
                   unsigned short[::1] WTpk not None, int num_threads=1):
    """Wpk <- W (K, N) and WTpk <- W^T (N, K), both as :func:`pack_bf16` packs them (the same
    values), from one read of W: 32 rows of W at a time, which are both 16 pair rows of every
    panel of Wpk and one panel of WTpk (a layer's weights for its forward and its dX). The
    chunks of 32 rows are shared among ``num_threads`` OpenMP threads."""
    cdef Py_ssize_t K = W.shape[0], N = W.shape[1]
    cdef Py_ssize_t Kp = (K + 31) // 32 * 32, Np = (N + 31) // 32 * 32
    cdef Py_ssize_t nchunk = Kp // 32, c, r0, kc
    if Wpk.shape[0] != packed_bf16_size(K, N) or WTpk.shape[0] != packed_bf16_size(N, K):
        raise ValueError(f"pack_bf16_pair: Wpk has {Wpk.shape[0]} values and WTpk "
                         f"{WTpk.shape[0]}, a ({K}, {N}) matrix needs "
                         f"{packed_bf16_size(K, N)} for each")
    if num_threads < 1:
        raise ValueError(f"pack_bf16_pair: num_threads must be >= 1, got {num_threads}")
    if K == 0 or N == 0:
        return
    with nogil:
        for c in prange(nchunk, num_threads=num_threads, schedule='static',
                        use_threads_if=K * N >= 65536):
            r0 = c * 32
            kc = K - r0 if K - r0 < 32 else 32
            fnn_bgemm_pack_rows(kc, N, &W[0, 0] + r0 * N, Np, Kp,
                                &Wpk[0] + r0 * 32, &WTpk[0] + r0 * Np)


def gemm(const floating[:, ::1] A not None, const floating[:, ::1] B not None,
         floating[:, ::1] C not None, bint trans_a, bint trans_b, bint accumulate,
         bint bf16=False, const unsigned short[::1] Bpk=None):
    """C (M, N) <- [C +] op(A) @ op(B); op(A) is (M, K) (A is (K, M) when ``trans_a``), op(B) is
    (K, N). float32 runs the kernel of :func:`gemm_kernel`, float64 the system BLAS. ``bf16``
    (float32 only): both operands rounded to bfloat16, float32 sums (:func:`bf16_kernel`);
    ``Bpk``: op(B) as :func:`pack_bf16` packed it, used instead of packing B again."""
    cdef Py_ssize_t M = A.shape[1] if trans_a else A.shape[0]
    cdef Py_ssize_t K = A.shape[0] if trans_a else A.shape[1]
    cdef Py_ssize_t KB = B.shape[1] if trans_b else B.shape[0]
    cdef Py_ssize_t N = B.shape[0] if trans_b else B.shape[1]
    if KB != K or C.shape[0] != M or C.shape[1] != N:
        raise ValueError(f"gemm: op(A) is ({M}, {K}), op(B) ({KB}, {N}), C ({C.shape[0]}, "
                         f"{C.shape[1]})")
    if max(M, N, K) >= 2147483647:
        raise ValueError("gemm: dimensions must be below 2^31")
    if Bpk is not None and Bpk.shape[0] != packed_bf16_size(K, N):
        raise ValueError(f"gemm: Bpk has {Bpk.shape[0]} values, expected "
                         f"{packed_bf16_size(K, N)}")
    if M == 0 or N == 0:
        return
    cdef const unsigned short *bpk = NULL
    if Bpk is not None and bf16 and floating is float and Bpk.shape[0] > 0:
        bpk = &Bpk[0]
    cdef const floating *a = &A[0, 0] if A.shape[0] * A.shape[1] > 0 else NULL
    cdef const floating *b = &B[0, 0] if B.shape[0] * B.shape[1] > 0 else NULL
    if K == 0:
        if not accumulate:
            C[:, :] = 0
        return
    with nogil:
        gemm_rm(trans_a, trans_b, <int>M, <int>N, <int>K, <floating>1, a, <int>A.shape[1],
                b, <int>B.shape[1], <floating>(1 if accumulate else 0), &C[0, 0], <int>N, bf16,
                bpk, (N + 31) // 32, 0)


def gemm_kernel(int level=-2):
    """The float32 GEMM kernel: with no argument, its name (:func:`_blas.gemm_kernel_name`);
    ``level`` >= 0 forces one (0 blas, 1 generic, 2 avx2, 3 avx512; clamped to what the CPU runs),
    -1 goes back to the automatic choice. Each compiled module keeps its own setting."""
    return gemm_kernel_name(level)


def bf16_kernel(int level=-2):
    """The bfloat16 GEMM kernel: with no argument, its name ("amx", "avx512_bf16" or
    "emulated"); ``level`` >= 0 forces one (0 emulated, 1 avx512_bf16, 2 amx; clamped to what the
    CPU runs), -1 goes back to the automatic choice. Each compiled module keeps its own setting."""
    return bf16_kernel_name(level)


def round_bf16(const float[::1] x not None, float[::1] y not None, simd=True):
    """y <- x rounded to bfloat16 (round to nearest even; NaN stays NaN; subnormals to a signed
    zero), as float32: the rounding of the bfloat16 GEMM's packing. ``simd``: True its AVX-512
    code, False the scalar one, ``"hardware"`` the CPU's vcvtne2ps2bf16 instruction (which the
    bfloat16 im2col uses; ``RuntimeError`` on a CPU without AVX512_BF16)."""
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"round_bf16: x has {x.shape[0]} values, y {y.shape[0]}")
    cdef int mode = 2 if simd == "hardware" else (1 if simd else 0)
    cdef int rc = 0
    if x.shape[0] == 0:
        return
    with nogil:
        rc = fnn_round_bf16_array(&x[0], &y[0], x.shape[0], mode)
    if rc != 0:
        raise RuntimeError("round_bf16: this CPU has no AVX512_BF16 instructions")


def fma_peak_gflops(double seconds=0.3):
    """The float32 FMA peak of one core, measured: 12 independent chains of FMAs on the widest
    vector registers (AVX-512, else AVX2) for about ``seconds``; the best of 5 timings, GFLOP/s.
    0.0 on a CPU without AVX2+FMA."""
    from time import perf_counter as _perf_counter
    cdef float sink = 0
    cdef long reps = 100000
    cdef double flops, best = 0.0
    t0 = _perf_counter()
    with nogil:
        flops = fnn_fma_peak_run(reps, &sink)
    if flops == 0:
        return 0.0
    dt = max(_perf_counter() - t0, 1e-6)
    reps = max(1000, <long>(reps * seconds / 5 / dt))
    for _ in range(5):
        t0 = _perf_counter()
        with nogil:
            flops = fnn_fma_peak_run(reps, &sink)
        best = max(best, flops / max(_perf_counter() - t0, 1e-9) / 1e9)
    return best
