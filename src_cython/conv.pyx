"""Convolution and pooling kernels, channels-last (NHWC): forward, backward, max/avg pooling.

Kernels only: every array was checked by fastnn (shape, dtype, C-contiguity) before it gets here;
the ``def`` wrappers re-check the geometry cheaply (with the GIL) so that a wrong call raises
``ValueError`` instead of writing out of bounds. The copy loops (im2col, col2im, the direct
convolution, pooling) are C helpers in ``conv.h``, vectorised and cloned per ISA like ``simd.h``.

Layout
------
- ``X`` (N, H, W, C), output ``A`` (N, Ho, Wo, M), ``Ho = (H + ph + ph_end - kh) // sh + 1`` (same
  for W): ``ph`` zero rows before the input, ``ph_end`` after it (``ph_end = -1``, the default of
  every kernel: ``ph``). Asymmetric padding (TensorFlow's "same") is only a different output size:
  the kernels place windows from the top/left offset and bound-check every row and column.
- The weight (kh, kw, C, M) is passed as the (K, M) matrix it already is in memory, K = kh kw C.
- A column-matrix row holds one output position's receptive field in (i, j, c) order, so each
  kernel row ``i`` is one contiguous run of ``kw * C`` input values (NHWC); zero padding is done by
  bounds (the padded input is never built). ``col @ W`` is then already NHWC (no transpose).

Three paths, chosen from the geometry only (:func:`conv_path`)
---------------------------------------------------------------
- ``gemm``: im2col into a per-thread buffer, one GEMM (BLAS, single-threaded in each OpenMP thread)
  onto the bias-filled output, the activation while the block is hot.
- ``pointwise`` (1x1, stride 1, no padding): ``X`` itself is the column matrix, no im2col.
- ``direct`` (small receptive field, ``K <= DIRECT_MAX_K``, e.g. a first layer on grey images):
  GEMM with an inner dimension of ~9 runs far below peak and im2col copies runs of one to a few
  values, so output = bias + sum over taps of ``x * W[tap, :]``, vectorised over the output
  channels; its ``dW`` likewise. (``dX`` still goes through GEMM + col2im.)

Parallel design ("one pool", as dense.pyx)
------------------------------------------
- Forward: the N * Ho output rows (each Wo positions) are cut into blocks of ``br`` rows, ``br``
  fixed by the geometry so that a block's column matrix and output stay in L2 (``COL_BUDGET``);
  blocks may span images. OpenMP threads take whole blocks (dynamic schedule: on a busy machine a
  late thread does not hold the others back; a block's result does not depend on which thread
  computes it).
- Backward: the batch is cut into at most ``MAX_CHUNKS`` chunks of whole images, the chunk size a
  function of N only. A thread owns a chunk: it computes ``dZ = dA * g'(Z)`` block by block,
  accumulates the chunk's partial ``dW`` (col^T dZ) and ``db``, and, when needed,
  ``dcol = dZ W^T`` followed by col2im into its own images of ``dX`` (no race, no atomics). The
  partials are then summed in chunk order. Every floating-point sum therefore has the same order
  for any number of threads: results are bit-identical for 1, 2, ... threads.
- Workspaces (the per-thread column buffers, the per-chunk partials) are numpy arrays owned by the
  layer, allocated once per batch shape; :func:`conv_workspace` gives their sizes.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset
from _blas cimport gemm_rm, gemm_kernel_name, bf16_kernel_name, packed_bf16_data, fnn_bf16_get_level, fnn_bgemm_vnni, fnn_blas_single_begin, fnn_blas_single_enter, fnn_blas_single_end, fnn_install_blas_hook
from _simd cimport act_forward_keep, act_backward, col_sum

cdef extern from "conv.h" nogil:
    ctypedef struct Geom "fnn_conv_geom":
        Py_ssize_t N, H, W, C, M, kh, kw, sh, sw, ph, pw, Ho, Wo, K
    void fnn_im2col_f32(const float *X, float *col, const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    void fnn_im2col_f64(const double *X, double *col, const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    void fnn_col2im_f32(const float *col, float *dX, const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    void fnn_col2im_f64(const double *col, double *dX, const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    void fnn_bias_rows_f32(float *Z, Py_ssize_t rows, Py_ssize_t M, const float *b)
    void fnn_bias_rows_f64(double *Z, Py_ssize_t rows, Py_ssize_t M, const double *b)
    void fnn_conv_direct_f32(const float *X, const float *W, const float *b, float *A,
                             const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    void fnn_conv_direct_f64(const double *X, const double *W, const double *b, double *A,
                             const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    void fnn_conv_direct_dw_f32(const float *X, const float *dZ, float *dW, const Geom *g,
                                Py_ssize_t g0, Py_ssize_t rows)
    void fnn_maxpool_backward_tiled_f32(const float *dY, const int *argmax, float *dX,
                                        const Geom *g, Py_ssize_t n)
    void fnn_maxpool_backward_tiled_f64(const double *dY, const int *argmax, double *dX,
                                        const Geom *g, Py_ssize_t n)
    void fnn_conv_direct_dw_f64(const double *X, const double *dZ, double *dW, const Geom *g,
                                Py_ssize_t g0, Py_ssize_t rows)
    void fnn_maxpool_f32(const float *X, float *Y, int *argmax, const Geom *g, Py_ssize_t g0,
                         Py_ssize_t rows)
    void fnn_maxpool_f64(const double *X, double *Y, int *argmax, const Geom *g, Py_ssize_t g0,
                         Py_ssize_t rows)
    void fnn_maxpool_backward_f32(const float *dY, const int *argmax, float *dX, const Geom *g,
                                  Py_ssize_t n)
    void fnn_maxpool_backward_f64(const double *dY, const int *argmax, double *dX, const Geom *g,
                                  Py_ssize_t n)
    void fnn_avgpool_f32(const float *X, float *Y, const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    int fnn_conv_forward_bf16(int level, const float *X, const Geom *g, Py_ssize_t g0,
                              Py_ssize_t rows, const unsigned short *Wpk, const float *bias,
                              Py_ssize_t ld, unsigned short *buf, float *out)
    void fnn_im2col_vnni_bf16(const float *X, unsigned short *colv, Py_ssize_t ld, const Geom *g,
                              Py_ssize_t g0, Py_ssize_t rows, Py_ssize_t npos_pad)
    void fnn_avgpool_f64(const double *X, double *Y, const Geom *g, Py_ssize_t g0, Py_ssize_t rows)
    void fnn_avgpool_backward_f32(const float *dY, float *dX, const Geom *g, Py_ssize_t n)
    void fnn_avgpool_backward_f64(const double *dY, double *dX, const Geom *g, Py_ssize_t n)
    void fnn_global_avgpool_f32(const float *X, float *Y, Py_ssize_t P, Py_ssize_t C, Py_ssize_t n)
    void fnn_global_avgpool_f64(const double *X, double *Y, Py_ssize_t P, Py_ssize_t C,
                                Py_ssize_t n)
    void fnn_global_avgpool_backward_f32(const float *dY, float *dX, Py_ssize_t P, Py_ssize_t C,
                                         Py_ssize_t n)
    void fnn_global_avgpool_backward_f64(const double *dY, double *dX, Py_ssize_t P,
                                         Py_ssize_t C, Py_ssize_t n)

# Below this many multiply-adds a kernel runs on one thread (OpenMP fork/join costs ~2-5 us).
cdef Py_ssize_t PAR_MIN_MACS = 1 << 16
# Elementwise (pooling) work below this many elements runs on one thread.
cdef Py_ssize_t PAR_MIN_POOL = 1 << 15
# Bytes of column matrix + output per thread and block (a quarter of a 2 MB L2; 192 KB ran
# 10-20% slower on the DQN layers, 1-3 MB within the noise of 512 KB).
cdef Py_ssize_t COL_BUDGET = 512 * 1024
# The backward pass cuts the batch into at most this many chunks of images (partial dW each).
cdef Py_ssize_t MAX_CHUNKS = 16
# Receptive fields up to this size (K = kh kw C) use the direct forward kernel instead of
# im2col + GEMM; the direct dW kernel only pays off for one input channel (im2col then copies runs
# of kw values). Measured on 2 cores (AVX-512), batch 64, 28x28 inputs, 32-64 outputs: direct
# forward 1.2-1.7x faster for K = 9..50, 1.15x slower for K = 72; direct dW 1.1-1.4x faster for
# C = 1, slower for C >= 2.
cdef Py_ssize_t DIRECT_MAX_K = 64

cdef enum:
    PATH_GEMM = 0
    PATH_POINTWISE = 1
    PATH_DIRECT = 2
PATH_NAMES = ("gemm", "pointwise", "direct")
# -1: choose by geometry; 0 / 2: force gemm / direct (tests and benchmarks compare the paths)
cdef int FORCE_PATH = -1


# ---- fused-type wrappers of the C helpers ----------------------------------------------------

cdef inline void im2col(const floating *X, floating *col, Geom *g, Py_ssize_t g0,
                        Py_ssize_t rows) noexcept nogil:
    if floating is float:
        fnn_im2col_f32(X, col, g, g0, rows)
    else:
        fnn_im2col_f64(X, col, g, g0, rows)


cdef inline void col2im(const floating *col, floating *dX, Geom *g, Py_ssize_t g0,
                        Py_ssize_t rows) noexcept nogil:
    if floating is float:
        fnn_col2im_f32(col, dX, g, g0, rows)
    else:
        fnn_col2im_f64(col, dX, g, g0, rows)


cdef inline void bias_rows(floating *Z, Py_ssize_t rows, Py_ssize_t M,
                           const floating *b) noexcept nogil:
    if floating is float:
        fnn_bias_rows_f32(Z, rows, M, b)
    else:
        fnn_bias_rows_f64(Z, rows, M, b)


cdef inline void conv_direct(const floating *X, const floating *W, const floating *b, floating *A,
                             Geom *g, Py_ssize_t g0, Py_ssize_t rows) noexcept nogil:
    if floating is float:
        fnn_conv_direct_f32(X, W, b, A, g, g0, rows)
    else:
        fnn_conv_direct_f64(X, W, b, A, g, g0, rows)


cdef inline void conv_direct_dw(const floating *X, const floating *dZ, floating *dW, Geom *g,
                                Py_ssize_t g0, Py_ssize_t rows) noexcept nogil:
    if floating is float:
        fnn_conv_direct_dw_f32(X, dZ, dW, g, g0, rows)
    else:
        fnn_conv_direct_dw_f64(X, dZ, dW, g, g0, rows)


# ---- geometry --------------------------------------------------------------------------------

cdef inline Py_ssize_t _out_size(Py_ssize_t n, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p0,
                                 Py_ssize_t p1) noexcept nogil:
    """Output length for padding p0 before and p1 after the input."""
    if s < 1 or n + p0 + p1 < k:
        return -1
    return (n + p0 + p1 - k) // s + 1


cdef inline int _path(Geom *g) noexcept nogil:
    """The forward kernel."""
    if g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0 \
            and g.Ho == g.H and g.Wo == g.W:
        return PATH_POINTWISE
    if FORCE_PATH >= 0:
        return FORCE_PATH
    if g.K <= DIRECT_MAX_K:
        return PATH_DIRECT
    return PATH_GEMM


cdef inline int _dw_path(Geom *g) noexcept nogil:
    """The kernel of the weight gradient."""
    cdef int p = _path(g)
    if p == PATH_DIRECT and FORCE_PATH < 0 and g.C > 1:
        return PATH_GEMM
    return p


cdef inline Py_ssize_t _block_rows(Geom *g, Py_ssize_t itemsize, Py_ssize_t total_rows) noexcept nogil:
    """Output rows per block: a function of the geometry only (never of the threads)."""
    cdef Py_ssize_t br = COL_BUDGET // (g.Wo * (g.K + g.M) * itemsize)
    if br < 1:
        br = 1
    if br > total_rows:
        br = total_rows
    return br if br > 0 else 1


cdef inline Py_ssize_t _chunk_images(Py_ssize_t N) noexcept nogil:
    return (N + MAX_CHUNKS - 1) // MAX_CHUNKS if N > 0 else 1


cdef inline Py_ssize_t _ld16(Geom *g) noexcept nogil:
    """Row length of a bfloat16 im2col block: K rounded up to 32."""
    return (g.K + 31) // 32 * 32


cdef inline int _dw_bf16(int level, const float *X, const float *dZ, unsigned short *colv,
                         Py_ssize_t ld16, Geom *g, Py_ssize_t g0, Py_ssize_t rows, bint acc,
                         float *dW) noexcept nogil:
    """dW (K, M) [+]= col^T dZ of one block, as dW^T = dZ^T col with the block's im2col written
    straight into bfloat16 pairs of positions (the GEMM's B operand, no packing); 0, or -1 if the
    GEMM could not allocate its buffer (dW unchanged)."""
    cdef Py_ssize_t npos = rows * g.Wo
    fnn_im2col_vnni_bf16(X, colv, ld16, g, g0, rows, (npos + 31) // 32 * 32)
    return fnn_bgemm_vnni(level, g.M, g.K, npos, dZ, 1, g.M, NULL, 0, colv, ld16, 64, acc, dW,
                          g.M, 1)


cdef inline bint _im2col_bf16(Geom *g, bint bf16, int path, Py_ssize_t block_pos,
                              Py_ssize_t col_bytes) noexcept nogil:
    """Whether a bfloat16 GEMM takes its im2col block written straight into bfloat16
    (conv.h's fnn_im2col_bf16 / fnn_im2col_vnni_bf16, AVX-512 kernels only): the GEMM path, and
    the per-thread column buffer (col_bytes) holds block_pos positions rounded up to 32, each K
    rounded up to 32 values of 2 bytes."""
    return (bf16 and path == PATH_GEMM and fnn_bf16_get_level() >= 1
            and (block_pos + 31) // 32 * 32 * _ld16(g) * 2 <= col_bytes)


# every size and kh*kw*C below 2^31, so products of two of them cannot overflow Py_ssize_t
cdef Py_ssize_t LIMIT = 2147483647


cdef int _geometry(Geom *g, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M,
                   int kh, int kw, int sh, int sw, int ph, int pw, int ph_end=-1,
                   int pw_end=-1) except -1:
    """Fill g. Padding: ph / pw before (top / left), ph_end / pw_end after (bottom / right; -1:
    the same as before, i.e. symmetric)."""
    if ph_end == -1:
        ph_end = ph
    if pw_end == -1:
        pw_end = pw
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0 or ph_end < 0 or pw_end < 0:
        raise ValueError(f"bad convolution geometry: kernel ({kh}, {kw}), stride ({sh}, {sw}), "
                         f"padding ({ph}, {pw}), end padding ({ph_end}, {pw_end}) (-1: symmetric)")
    if N < 0 or H < 1 or W < 1 or C < 1 or M < 1:
        raise ValueError(f"bad convolution sizes: input ({N}, {H}, {W}, {C}), {M} outputs")
    if H > LIMIT or W > LIMIT or C > LIMIT or M > LIMIT or N > LIMIT or kh > LIMIT or kw > LIMIT \
            or <Py_ssize_t>kh * kw * C > LIMIT or ph > LIMIT or pw > LIMIT or ph_end > LIMIT \
            or pw_end > LIMIT:
        raise ValueError(f"convolution sizes too large: input ({N}, {H}, {W}, {C}), {M} outputs, "
                         f"kernel ({kh}, {kw})")
    g.N, g.H, g.W, g.C, g.M = N, H, W, C, M
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw = kh, kw, sh, sw, ph, pw
    g.Ho = _out_size(H, kh, sh, ph, ph_end)
    g.Wo = _out_size(W, kw, sw, pw, pw_end)
    g.K = kh * kw * C
    if g.Ho < 1 or g.Wo < 1:
        raise ValueError(f"kernel ({kh}, {kw}) is larger than the padded input "
                         f"({H + ph + ph_end}, {W + pw + pw_end})")
    return 0


cdef int _check_threads(int num_threads) except -1:
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return 0


cdef int _check_shape(str name, tuple got, tuple want) except -1:
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")
    return 0


def _force_path(path):
    """Testing hook: ``None`` chooses the path by geometry, ``"gemm"`` or ``"direct"`` forces it
    (pointwise convolutions always take the pointwise path)."""
    global FORCE_PATH
    FORCE_PATH = -1 if path is None else PATH_NAMES.index(path)


def conv_path(Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M, int kh, int kw, int sh,
              int sw, int ph, int pw, int ph_end=-1, int pw_end=-1):
    """Which kernels a geometry takes: ``(forward, weight_gradient)``, each ``"gemm"``,
    ``"pointwise"`` or ``"direct"`` (the input gradient always goes through GEMM). Padding as in
    :func:`conv_forward`."""
    cdef Geom g
    _geometry(&g, 1, H, W, C, M, kh, kw, sh, sw, ph, pw, ph_end, pw_end)
    return PATH_NAMES[_path(&g)], PATH_NAMES[_dw_path(&g)]


def conv_workspace(Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M,
                   int kh, int kw, int sh, int sw, int ph, int pw, Py_ssize_t itemsize,
                   int ph_end=-1, int pw_end=-1):
    """Workspace sizes for :func:`conv_forward` / :func:`conv_backward` (padding as there).

    Returns ``(col_rows, K, n_chunks)``: the per-thread column buffer is ``(threads, col_rows, K)``
    (``col_rows`` is 1 for a pointwise convolution, which needs none), the per-chunk partials are
    ``pdW (n_chunks, K, M)`` and ``pdb (n_chunks, M)``.
    """
    cdef Geom g
    if itemsize != 4 and itemsize != 8:
        raise ValueError(f"itemsize must be 4 (float32) or 8 (float64), got {itemsize}")
    _geometry(&g, N, H, W, C, M, kh, kw, sh, sw, ph, pw, ph_end, pw_end)
    cdef Py_ssize_t cb = _chunk_images(N)
    cdef Py_ssize_t nchunks = (N + cb - 1) // cb if N > 0 else 1
    cdef Py_ssize_t rows = 1
    if _path(&g) != PATH_POINTWISE:
        rows = _block_rows(&g, itemsize, N * g.Ho if N > 0 else g.Ho) * g.Wo
    return rows, g.K, nchunks


# ---- convolution -----------------------------------------------------------------------------

def conv_forward(const floating[:, :, :, ::1] X not None, const floating[:, ::1] W not None,
                 const floating[::1] b not None, floating[:, :, :, ::1] A not None,
                 floating[:, :, ::1] col not None, int kh, int kw, int sh, int sw, int ph, int pw,
                 int kind, double alpha, int num_threads,
                 int ph_end=-1, int pw_end=-1, floating[:, :, :, ::1] Z=None, bint bf16=False,
                 const unsigned short[::1] Wpk=None):
    """A (N, Ho, Wo, M) <- g(conv(X (N, H, W, C), W (kh kw C, M)) + b (M,)).

    ``bf16`` (float32): the GEMM's inputs (the im2col block and W) rounded to bfloat16, float32
    sums (bgemm.h); the direct kernel (a receptive field K <= 64, e.g. a first layer on grey
    images) stays in float32, where a bfloat16 GEMM with K padded to 32 is slower. ``Wpk`` (with
    ``bf16``, optional): W as ``fastnn._gemm.pack_bf16(W, False, Wpk)`` packed it, so no block
    packs W again.

    Padding: ``ph`` / ``pw`` zero rows / columns before the input (top / left), ``ph_end`` /
    ``pw_end`` after it (bottom / right; -1, the default: the same as before), so
    ``Ho = (H + ph + ph_end - kh) // sh + 1`` (TensorFlow's "same" puts the odd one at the end).

    ``col`` is the per-thread column buffer ``(threads, col_rows, K)`` of :func:`conv_workspace`;
    at most ``col.shape[0]`` threads are used. kind: a code of simd.h's activation list. ``Z``
    (N, Ho, Wo, M), optional: for gelu and silu (whose derivative needs the pre-activation) it
    receives the pre-activation, written in the activation's loop; not written for the others.
    """
    cdef Geom g
    _check_threads(num_threads)
    _geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], W.shape[1], kh, kw, sh, sw, ph, pw,
              ph_end, pw_end)
    _check_shape("W", (W.shape[0], W.shape[1]), (g.K, g.M))
    _check_shape("b", (b.shape[0],), (g.M,))
    _check_shape("A", (A.shape[0], A.shape[1], A.shape[2], A.shape[3]), (g.N, g.Ho, g.Wo, g.M))
    if Z is not None:
        _check_shape("Z", (Z.shape[0], Z.shape[1], Z.shape[2], Z.shape[3]), (g.N, g.Ho, g.Wo, g.M))
    cdef int path = _path(&g)
    cdef const unsigned short *wpk = packed_bf16_data(Wpk, g.K, g.M, bf16, "Wpk")
    cdef Py_ssize_t R = g.N * g.Ho
    cdef Py_ssize_t br = _block_rows(&g, sizeof(floating), R)
    if path == PATH_GEMM:
        _check_shape("col", (col.shape[1], col.shape[2]), (br * g.Wo, g.K))
    if col.shape[0] < 1:
        raise ValueError("col must have at least one thread slot")
    if g.N == 0:
        return
    cdef Py_ssize_t nb = (R + br - 1) // br, blk, g0, rows, npos
    cdef int nt = num_threads if num_threads < col.shape[0] else <int>col.shape[0]
    cdef int prev, tid
    cdef floating a = <floating>alpha
    cdef const floating *Xp = &X[0, 0, 0, 0]
    cdef const floating *Wp = &W[0, 0]
    cdef const floating *bp = &b[0]
    cdef floating *Ap = &A[0, 0, 0, 0]
    cdef floating *Zp = NULL  # keeps the pre-activation (gelu, silu), at A's offsets
    if Z is not None:
        Zp = &Z[0, 0, 0, 0]
    cdef floating *cp
    cdef floating *out
    cdef bint c16 = floating is float and wpk != NULL and _im2col_bf16(
        &g, bf16, path, br * g.Wo, col.shape[1] * col.shape[2] * sizeof(floating))
    cdef Py_ssize_t ld16 = _ld16(&g)
    cdef int level = fnn_bf16_get_level()
    with nogil:
        prev = fnn_blas_single_begin()  # the main thread; see fnn_omp.h
        for blk in prange(nb, num_threads=nt, schedule='dynamic', chunksize=1,
                          use_threads_if=R * g.Wo * g.K * g.M >= PAR_MIN_MACS):
            tid = threadid()
            g0 = blk * br
            rows = br if br < R - g0 else R - g0
            npos = rows * g.Wo
            out = Ap + g0 * g.Wo * g.M
            if path == PATH_DIRECT:
                conv_direct(Xp, Wp, bp, Ap, &g, g0, rows)
            elif c16:
                # the block's im2col in bfloat16, taken by the GEMM as it is (no packing)
                fnn_conv_forward_bf16(level, <const float *>Xp, &g, g0, rows, wpk,
                                      <const float *>bp, ld16, <unsigned short *>&col[tid, 0, 0],
                                      <float *>out)
            else:
                fnn_blas_single_enter()
                bias_rows(out, npos, g.M, bp)
                if path == PATH_POINTWISE:
                    cp = <floating *>(Xp + g0 * g.Wo * g.K)
                else:
                    cp = &col[tid, 0, 0]
                    im2col(Xp, cp, &g, g0, rows)
                gemm_rm(False, False, <int>npos, <int>g.M, <int>g.K, <floating>1, cp, <int>g.K,
                        Wp, <int>g.M, <floating>1, out, <int>g.M, bf16, wpk, (g.M + 31) // 32, 0)
            if kind != 0:
                act_forward_keep(out, NULL if Zp == NULL else Zp + (out - Ap), npos * g.M, kind, a)
        fnn_blas_single_end(prev)


def conv_backward(const floating[:, :, :, ::1] X not None, const floating[:, ::1] W not None,
                  const floating[:, :, :, ::1] A not None, const floating[:, :, :, ::1] dA not None,
                  floating[:, :, :, ::1] dZ not None, floating[:, ::1] dW not None,
                  floating[::1] db not None, floating[:, :, :, ::1] dX,
                  floating[:, :, ::1] col not None, floating[:, :, ::1] pdW not None,
                  floating[:, ::1] pdb not None, int kh, int kw, int sh, int sw, int ph, int pw,
                  int kind, double alpha, int num_threads,
                  int ph_end=-1, int pw_end=-1, bint bf16=False,
                  const unsigned short[::1] WTpk=None):
    """Backward of ``A = g(conv(X, W) + b)`` (padding and ``bf16`` as in :func:`conv_forward`;
    ``WTpk``: W^T as ``fastnn._gemm.pack_bf16(W, True, WTpk)`` packed it, for dX).

    dZ <- dA * g'(Z) (from the output A, or, for gelu and silu, from the pre-activation Z that
    ``conv_forward`` kept, passed in place of A; dZ may be dA itself, and is not written then if
    kind is 0), dW (K, M) <- sum_n col(X_n)^T dZ_n, db (M,) <- sum dZ, and, unless dX is None,
    dX (N, H, W, C) <- col2im(dZ W^T). ``col`` (threads, col_rows, K), ``pdW`` (n_chunks, K, M),
    ``pdb`` (n_chunks, M) are the workspaces of :func:`conv_workspace`.
    """
    cdef Geom g
    _check_threads(num_threads)
    _geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], W.shape[1], kh, kw, sh, sw, ph, pw,
              ph_end, pw_end)
    cdef tuple ashape = (g.N, g.Ho, g.Wo, g.M)
    _check_shape("W", (W.shape[0], W.shape[1]), (g.K, g.M))
    _check_shape("A", (A.shape[0], A.shape[1], A.shape[2], A.shape[3]), ashape)
    _check_shape("dA", (dA.shape[0], dA.shape[1], dA.shape[2], dA.shape[3]), ashape)
    _check_shape("dZ", (dZ.shape[0], dZ.shape[1], dZ.shape[2], dZ.shape[3]), ashape)
    _check_shape("dW", (dW.shape[0], dW.shape[1]), (g.K, g.M))
    _check_shape("db", (db.shape[0],), (g.M,))
    cdef bint need_dx = dX is not None
    if need_dx:
        _check_shape("dX", (dX.shape[0], dX.shape[1], dX.shape[2], dX.shape[3]),
                     (g.N, g.H, g.W, g.C))
    cdef int path = _dw_path(&g)
    cdef const unsigned short *wtpk = packed_bf16_data(WTpk, g.M, g.K, bf16, "WTpk")
    cdef Py_ssize_t cb = _chunk_images(g.N)
    cdef Py_ssize_t nchunks = (g.N + cb - 1) // cb if g.N > 0 else 1
    cdef Py_ssize_t br = _block_rows(&g, sizeof(floating), cb * g.Ho)
    cdef Py_ssize_t brf = _block_rows(&g, sizeof(floating), g.N * g.Ho if g.N > 0 else g.Ho)
    if path != PATH_POINTWISE and (path == PATH_GEMM or need_dx):
        _check_shape("col", (col.shape[1], col.shape[2]), (brf * g.Wo, g.K))
    if col.shape[0] < 1:
        raise ValueError("col must have at least one thread slot")
    _check_shape("pdW", (pdW.shape[0], pdW.shape[1], pdW.shape[2]), (nchunks, g.K, g.M))
    _check_shape("pdb", (pdb.shape[0], pdb.shape[1]), (nchunks, g.M))
    if g.N == 0:
        dW[:, :] = 0
        db[:] = 0
        return

    cdef int nt = num_threads if num_threads < col.shape[0] else <int>col.shape[0]
    cdef bint use_threads = g.N * g.Ho * g.Wo * g.K * g.M >= PAR_MIN_MACS
    cdef Py_ssize_t c, n0, n1, rows_c, nblk, blk, g0, rows, npos, p0, k, m, j
    cdef int prev, tid
    cdef floating a = <floating>alpha
    cdef const floating *Xp = &X[0, 0, 0, 0]
    cdef const floating *Wp = &W[0, 0]
    cdef const floating *Ap = &A[0, 0, 0, 0]
    cdef const floating *dAp = &dA[0, 0, 0, 0]
    cdef floating *dZp = &dZ[0, 0, 0, 0]
    cdef floating *dXp = NULL
    if need_dx:
        dXp = &dX[0, 0, 0, 0]
    # dZ is dA itself for the identity (nothing to do), else dA * g'(Z) (a copy for the identity)
    cdef bint make_dz = kind != 0 or <const void *>dZp != <const void *>dAp
    cdef floating *cp
    cdef floating *z
    cdef floating *row
    cdef Py_ssize_t img = g.H * g.W * g.C
    cdef bint c16 = floating is float and _im2col_bf16(
        &g, bf16, path, br * g.Wo, col.shape[1] * col.shape[2] * sizeof(floating))
    cdef Py_ssize_t ld16 = _ld16(&g)
    cdef int level = fnn_bf16_get_level()
    with nogil:
        prev = fnn_blas_single_begin()  # the main thread; see fnn_omp.h
        for c in prange(nchunks, num_threads=nt, schedule='dynamic', chunksize=1,
                        use_threads_if=use_threads):
            tid = threadid()
            fnn_blas_single_enter()
            n0 = c * cb
            n1 = n0 + cb if n0 + cb < g.N else g.N
            rows_c = (n1 - n0) * g.Ho
            nblk = (rows_c + br - 1) // br
            cp = &col[tid, 0, 0]
            if need_dx and path != PATH_POINTWISE:
                memset(dXp + n0 * img, 0, (n1 - n0) * img * sizeof(floating))
            if path == PATH_DIRECT:
                memset(&pdW[c, 0, 0], 0, g.K * g.M * sizeof(floating))
            for blk in range(nblk):
                g0 = n0 * g.Ho + blk * br
                rows = br if br < rows_c - blk * br else rows_c - blk * br
                npos = rows * g.Wo
                p0 = g0 * g.Wo
                z = dZp + p0 * g.M
                if make_dz:
                    act_backward(Ap + p0 * g.M, dAp + p0 * g.M, z, npos * g.M, kind, a)
                # partial dW of this chunk: col^T dZ (the first block overwrites, then accumulates)
                if path == PATH_DIRECT:
                    conv_direct_dw(Xp, dZp, &pdW[c, 0, 0], &g, g0, rows)
                elif path == PATH_POINTWISE:
                    gemm_rm(True, False, <int>g.K, <int>g.M, <int>npos, <floating>1,
                            Xp + p0 * g.K, <int>g.K, z, <int>g.M,
                            <floating>(0 if blk == 0 else 1), &pdW[c, 0, 0], <int>g.M, bf16)
                elif c16 and _dw_bf16(level, <const float *>Xp, <const float *>z,
                                      <unsigned short *>cp, ld16, &g, g0, rows, blk != 0,
                                      <float *>&pdW[c, 0, 0]) == 0:
                    pass
                else:
                    im2col(Xp, cp, &g, g0, rows)
                    gemm_rm(True, False, <int>g.K, <int>g.M, <int>npos, <floating>1,
                            cp, <int>g.K, z, <int>g.M,
                            <floating>(0 if blk == 0 else 1), &pdW[c, 0, 0], <int>g.M, bf16)
                col_sum(z, npos, g.M, g.M, &pdb[c, 0], blk != 0)
                if need_dx:
                    if path == PATH_POINTWISE:
                        gemm_rm(False, True, <int>npos, <int>g.K, <int>g.M, <floating>1, z, <int>g.M,
                                Wp, <int>g.M, <floating>0, dXp + p0 * g.K, <int>g.K, bf16,
                                wtpk, (g.K + 31) // 32, 0)
                    else:
                        gemm_rm(False, True, <int>npos, <int>g.K, <int>g.M, <floating>1, z, <int>g.M,
                                Wp, <int>g.M, <floating>0, cp, <int>g.K, bf16,
                                wtpk, (g.K + 31) // 32, 0)
                        col2im(cp, dXp, &g, g0, rows)

        # dW = sum of the chunk partials, in chunk order (rows of dW in parallel)
        for k in prange(g.K, num_threads=nt, schedule='static',
                        use_threads_if=use_threads and nchunks * g.K * g.M >= PAR_MIN_POOL):
            row = &dW[k, 0]
            memcpy(row, &pdW[0, k, 0], g.M * sizeof(floating))
            for j in range(1, nchunks):
                for m in range(g.M):
                    row[m] += pdW[j, k, m]
        memcpy(&db[0], &pdb[0, 0], g.M * sizeof(floating))
        for j in range(1, nchunks):
            for m in range(g.M):
                db[m] += pdb[j, m]
        fnn_blas_single_end(prev)


# ---- pooling ---------------------------------------------------------------------------------
# Padding as in conv_forward: ph / pw before the input, ph_end / pw_end after it (-1: the same as
# before). Each must be smaller than the window, so that every window holds a real position:
# padded positions take no part (max: as -inf; average: divided by the count of real positions).

cdef int _pool_geometry(Geom *g, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                        int kh, int kw, int sh, int sw, int ph, int pw, int ph_end,
                        int pw_end) except -1:
    _geometry(g, N, H, W, C, C, kh, kw, sh, sw, ph, pw, ph_end, pw_end)
    if ph_end == -1:
        ph_end = ph
    if pw_end == -1:
        pw_end = pw
    if ph >= kh or ph_end >= kh or pw >= kw or pw_end >= kw:
        raise ValueError(f"pooling padding ({ph}, {ph_end}) x ({pw}, {pw_end}) must be smaller "
                         f"than the window ({kh}, {kw})")
    if g.H * g.W >= 2147483647:
        raise ValueError("image too large for int32 argmax positions")
    return 0


def maxpool_forward(const floating[:, :, :, ::1] X not None, floating[:, :, :, ::1] Y not None,
                    int[:, :, :, ::1] argmax not None, int kh, int kw, int sh, int sw,
                    int num_threads, int ph=0, int pw=0, int ph_end=-1, int pw_end=-1):
    """Y (N, Ho, Wo, C) <- max over each kh x kw window of X (N, H, W, C), stride (sh, sw),
    padding as described above (padded positions ignored).

    argmax (N, Ho, Wo, C) <- the flat position ``ih * W + iw`` of the (first) maximum in its image;
    a NaN in a window is its maximum (NaN propagates).
    """
    cdef Geom g
    _check_threads(num_threads)
    _pool_geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], kh, kw, sh, sw, ph, pw,
                   ph_end, pw_end)
    cdef tuple yshape = (g.N, g.Ho, g.Wo, g.C)
    _check_shape("Y", (Y.shape[0], Y.shape[1], Y.shape[2], Y.shape[3]), yshape)
    _check_shape("argmax", (argmax.shape[0], argmax.shape[1], argmax.shape[2], argmax.shape[3]),
                 yshape)
    cdef Py_ssize_t R = g.N * g.Ho, r
    if R == 0:
        return
    cdef const floating *Xp = &X[0, 0, 0, 0]
    cdef floating *Yp = &Y[0, 0, 0, 0]
    cdef int *ix = &argmax[0, 0, 0, 0]
    with nogil:
        for r in prange(R, num_threads=num_threads, schedule='static',
                        use_threads_if=R * g.Wo * g.C * g.kh * g.kw >= PAR_MIN_POOL):
            if floating is float:
                fnn_maxpool_f32(Xp, Yp, ix, &g, r, 1)
            else:
                fnn_maxpool_f64(Xp, Yp, ix, &g, r, 1)


cdef bint _pool_tiled_disabled = False


def _disable_tiled_pool_backward(bint disabled):
    """Test hook: turn maxpool_backward's write-once path for tiling windows off (or on)."""
    global _pool_tiled_disabled
    _pool_tiled_disabled = disabled


def maxpool_backward(const floating[:, :, :, ::1] dY not None, const int[:, :, :, ::1] argmax not None,
                     floating[:, :, :, ::1] dX not None, int kh, int kw, int sh, int sw,
                     int num_threads, int ph=0, int pw=0, int ph_end=-1, int pw_end=-1):
    """dX (N, H, W, C) <- 0, then dX[n, argmax[n, oh, ow, c], c] += dY[n, oh, ow, c] (per image,
    in output order). ``argmax`` must come from :func:`maxpool_forward` with this geometry.
    Unpadded windows that tile the input (stride == kernel size) write each position of dX once
    instead (same result; no zeroing pass)."""
    cdef Geom g
    _check_threads(num_threads)
    _pool_geometry(&g, dX.shape[0], dX.shape[1], dX.shape[2], dX.shape[3], kh, kw, sh, sw, ph, pw,
                   ph_end, pw_end)
    cdef tuple yshape = (g.N, g.Ho, g.Wo, g.C)
    _check_shape("dY", (dY.shape[0], dY.shape[1], dY.shape[2], dY.shape[3]), yshape)
    _check_shape("argmax", (argmax.shape[0], argmax.shape[1], argmax.shape[2], argmax.shape[3]),
                 yshape)
    cdef Py_ssize_t n, img = g.H * g.W * g.C
    if g.N == 0:
        return
    cdef const floating *dYp = &dY[0, 0, 0, 0]
    cdef const int *ix = &argmax[0, 0, 0, 0]
    cdef Py_ssize_t i, total = g.N * g.Ho * g.Wo * g.C, bad = -1, hw = g.H * g.W
    with nogil:  # argmax positions index dX: a position outside the image would write out of bounds
        for i in range(total):
            if ix[i] < 0 or ix[i] >= hw:
                bad = i
                break
    if bad >= 0:
        raise ValueError(f"argmax holds position {ix[bad]} outside [0, {hw}) (it must come from "
                         f"maxpool_forward with this geometry)")
    cdef floating *dXp = &dX[0, 0, 0, 0]
    # the write-once path walks the windows oh * kh + i, ow * kw + j: all inside the image only
    # without padding at the start and with no window reaching into padding at the end
    cdef bint tiled = sh == kh and sw == kw and g.ph == 0 and g.pw == 0 \
        and g.Ho * kh <= g.H and g.Wo * kw <= g.W and not _pool_tiled_disabled
    with nogil:
        for n in prange(g.N, num_threads=num_threads, schedule='static',
                        use_threads_if=g.N * img >= PAR_MIN_POOL):
            if tiled:  # every position written once: no zeroing pass
                if floating is float:
                    fnn_maxpool_backward_tiled_f32(dYp, ix, dXp, &g, n)
                else:
                    fnn_maxpool_backward_tiled_f64(dYp, ix, dXp, &g, n)
            else:
                memset(dXp + n * img, 0, img * sizeof(floating))
                if floating is float:
                    fnn_maxpool_backward_f32(dYp, ix, dXp, &g, n)
                else:
                    fnn_maxpool_backward_f64(dYp, ix, dXp, &g, n)


def avgpool_forward(const floating[:, :, :, ::1] X not None, floating[:, :, :, ::1] Y not None,
                    int kh, int kw, int sh, int sw, int num_threads, int ph=0, int pw=0,
                    int ph_end=-1, int pw_end=-1):
    """Y (N, Ho, Wo, C) <- mean over each kh x kw window of X (N, H, W, C), stride (sh, sw),
    padding as described above: the sum of the window's real positions divided by their count."""
    cdef Geom g
    _check_threads(num_threads)
    _pool_geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], kh, kw, sh, sw, ph, pw,
                   ph_end, pw_end)
    _check_shape("Y", (Y.shape[0], Y.shape[1], Y.shape[2], Y.shape[3]), (g.N, g.Ho, g.Wo, g.C))
    cdef Py_ssize_t R = g.N * g.Ho, r
    if R == 0:
        return
    cdef const floating *Xp = &X[0, 0, 0, 0]
    cdef floating *Yp = &Y[0, 0, 0, 0]
    with nogil:
        for r in prange(R, num_threads=num_threads, schedule='static',
                        use_threads_if=R * g.Wo * g.C * g.kh * g.kw >= PAR_MIN_POOL):
            if floating is float:
                fnn_avgpool_f32(Xp, Yp, &g, r, 1)
            else:
                fnn_avgpool_f64(Xp, Yp, &g, r, 1)


def avgpool_backward(const floating[:, :, :, ::1] dY not None, floating[:, :, :, ::1] dX not None,
                     int kh, int kw, int sh, int sw, int num_threads, int ph=0, int pw=0,
                     int ph_end=-1, int pw_end=-1):
    """dX (N, H, W, C) <- 0, then the real positions of each window of dX += dY[n, oh, ow] / count
    (per image; padding and count as in :func:`avgpool_forward`)."""
    cdef Geom g
    _check_threads(num_threads)
    _pool_geometry(&g, dX.shape[0], dX.shape[1], dX.shape[2], dX.shape[3], kh, kw, sh, sw, ph, pw,
                   ph_end, pw_end)
    _check_shape("dY", (dY.shape[0], dY.shape[1], dY.shape[2], dY.shape[3]), (g.N, g.Ho, g.Wo, g.C))
    cdef Py_ssize_t n, img = g.H * g.W * g.C
    if g.N == 0:
        return
    cdef const floating *dYp = &dY[0, 0, 0, 0]
    cdef floating *dXp = &dX[0, 0, 0, 0]
    with nogil:
        for n in prange(g.N, num_threads=num_threads, schedule='static',
                        use_threads_if=g.N * g.Ho * g.Wo * g.C * g.kh * g.kw >= PAR_MIN_POOL):
            memset(dXp + n * img, 0, img * sizeof(floating))
            if floating is float:
                fnn_avgpool_backward_f32(dYp, dXp, &g, n)
            else:
                fnn_avgpool_backward_f64(dYp, dXp, &g, n)


# ---- global average pooling --------------------------------------------------------------------

def global_avgpool_forward(const floating[:, :, :, ::1] X not None, floating[:, ::1] Y not None,
                           int num_threads):
    """Y (N, C) <- the mean of X (N, H, W, C) over H and W: per image and channel, the sum over the
    positions in order, divided by H W (one thread per image: the same result for any number of
    threads)."""
    _check_threads(num_threads)
    cdef Py_ssize_t N = X.shape[0], C = X.shape[3], P = X.shape[1] * X.shape[2], n
    if X.shape[1] < 1 or X.shape[2] < 1 or C < 1:
        raise ValueError(f"X must be a non-empty image batch, got shape "
                         f"({N}, {X.shape[1]}, {X.shape[2]}, {C})")
    _check_shape("Y", (Y.shape[0], Y.shape[1]), (N, C))
    if N == 0:
        return
    cdef const floating *Xp = &X[0, 0, 0, 0]
    cdef floating *Yp = &Y[0, 0]
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule='static',
                        use_threads_if=N * P * C >= PAR_MIN_POOL):
            if floating is float:
                fnn_global_avgpool_f32(Xp, Yp, P, C, n)
            else:
                fnn_global_avgpool_f64(Xp, Yp, P, C, n)


def global_avgpool_backward(const floating[:, ::1] dY not None,
                            floating[:, :, :, ::1] dX not None, int num_threads):
    """dX (N, H, W, C) <- dY (N, C) / (H W) at every position."""
    _check_threads(num_threads)
    cdef Py_ssize_t N = dX.shape[0], C = dX.shape[3], P = dX.shape[1] * dX.shape[2], n
    if dX.shape[1] < 1 or dX.shape[2] < 1 or C < 1:
        raise ValueError(f"dX must be a non-empty image batch, got shape "
                         f"({N}, {dX.shape[1]}, {dX.shape[2]}, {C})")
    _check_shape("dY", (dY.shape[0], dY.shape[1]), (N, C))
    if N == 0:
        return
    cdef const floating *dYp = &dY[0, 0]
    cdef floating *dXp = &dX[0, 0, 0, 0]
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule='static',
                        use_threads_if=N * P * C >= PAR_MIN_POOL):
            if floating is float:
                fnn_global_avgpool_backward_f32(dYp, dXp, P, C, n)
            else:
                fnn_global_avgpool_backward_f64(dYp, dXp, P, C, n)


def install_blas_hook(size_t addr):
    fnn_install_blas_hook(addr)


def gemm_kernel(int level=-2):
    """This module's float32 GEMM kernel (see fastnn._gemm.gemm_kernel)."""
    return gemm_kernel_name(level)


def bf16_kernel(int level=-2):
    """This module's bfloat16 GEMM kernel (see fastnn._gemm.bf16_kernel)."""
    return bf16_kernel_name(level)
