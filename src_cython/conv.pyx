"""Convolution and pooling kernels, channels-last (NHWC): im2col + GEMM forward, backward, pooling.

Kernels only: every array was checked by fastnn (shape, dtype, C-contiguity) before it gets here;
the ``def`` wrappers re-check the geometry cheaply (with the GIL) so that a wrong call raises
``ValueError`` instead of writing out of bounds.

Layout
------
- ``X`` (N, H, W, C), output ``A`` (N, Ho, Wo, M), ``Ho = (H + 2 ph - kh) // sh + 1`` (same for W).
- The weight (kh, kw, C, M) is passed as the (K, M) matrix it already is in memory, K = kh kw C.
- A column-matrix row holds one output position's receptive field in (i, j, c) order, so each
  kernel row ``i`` is one contiguous run of ``kw * C`` input values (NHWC); zero padding is done by
  bounds (the padded input is never built). ``col @ W`` is then already NHWC (no transpose).
- A 1x1, stride-1, unpadded convolution uses ``X`` itself as the column matrix (no im2col).

Parallel design ("one pool", as dense.pyx)
------------------------------------------
- Forward: the N * Ho output rows (each Wo positions) are cut into blocks of ``br`` rows whose
  column matrix fits a per-thread buffer of about ``COL_BUDGET`` bytes (L2-sized); blocks may span
  images. Each OpenMP thread fills its own buffer (im2col), pre-fills the output block with the
  bias, calls BLAS single-threaded (``beta = 1``) and applies the activation while the block is hot.
- Backward: the batch is cut into at most ``MAX_CHUNKS`` chunks of whole images, the chunk size a
  function of N only. A thread owns a chunk: it computes ``dZ = dA * g'(Z)`` block by block,
  rebuilds the block's column matrix, accumulates the chunk's partial ``dW`` (col^T dZ) and ``db``,
  and, when needed, ``dcol = dZ W^T`` followed by col2im into its own images of ``dX`` (no race, no
  atomics). The partials are then summed in chunk order. Every floating-point sum therefore has
  the same order for any number of threads: results are bit-identical for 1, 2, ... threads.
- Workspaces (the per-thread column buffers, the per-chunk partials) are numpy arrays owned by the
  layer, allocated once per batch shape; :func:`conv_workspace` gives their sizes.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset
from _blas cimport gemm_rm, fnn_blas_single_begin, fnn_blas_single_end, fnn_install_blas_hook
from _simd cimport act_forward, act_backward, fill_rows, col_sum

# Below this many multiply-adds a kernel runs on one thread (OpenMP fork/join costs ~2-5 us).
cdef Py_ssize_t PAR_MIN_MACS = 1 << 16
# Elementwise (pooling) work below this many elements runs on one thread.
cdef Py_ssize_t PAR_MIN_POOL = 1 << 15
# Bytes of column matrix per thread and block (about a quarter of a 1-2 MB L2).
cdef Py_ssize_t COL_BUDGET = 384 * 1024
# The backward pass cuts the batch into at most this many chunks of images (partial dW each).
cdef Py_ssize_t MAX_CHUNKS = 16


cdef struct Geom:
    Py_ssize_t N, H, W, C, M, kh, kw, sh, sw, ph, pw, Ho, Wo, K


cdef inline Py_ssize_t _out_size(Py_ssize_t n, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p) noexcept nogil:
    if s < 1 or n + 2 * p < k:
        return -1
    return (n + 2 * p - k) // s + 1


cdef inline bint _is_pointwise(Geom *g) noexcept nogil:
    return g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0 and g.pw == 0


cdef inline Py_ssize_t _block_rows(Geom *g, Py_ssize_t itemsize, Py_ssize_t total_rows) noexcept nogil:
    """Output rows per column block: a function of the geometry only (never of the threads)."""
    cdef Py_ssize_t br = COL_BUDGET // (g.Wo * g.K * itemsize)
    if br < 1:
        br = 1
    if br > total_rows:
        br = total_rows
    return br if br > 0 else 1


cdef inline Py_ssize_t _chunk_images(Py_ssize_t N) noexcept nogil:
    return (N + MAX_CHUNKS - 1) // MAX_CHUNKS if N > 0 else 1


cdef int _geometry(Geom *g, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M,
                   int kh, int kw, int sh, int sw, int ph, int pw) except -1:
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"bad convolution geometry: kernel ({kh}, {kw}), stride ({sh}, {sw}), "
                         f"padding ({ph}, {pw})")
    g.N, g.H, g.W, g.C, g.M = N, H, W, C, M
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw = kh, kw, sh, sw, ph, pw
    g.Ho = _out_size(H, kh, sh, ph)
    g.Wo = _out_size(W, kw, sw, pw)
    g.K = kh * kw * C
    if g.Ho < 1 or g.Wo < 1:
        raise ValueError(f"kernel ({kh}, {kw}) is larger than the padded input "
                         f"({H + 2 * ph}, {W + 2 * pw})")
    return 0


cdef int _check_shape(str name, tuple got, tuple want) except -1:
    if got != want:
        raise ValueError(f"{name} has shape {got}, expected {want}")
    return 0


# ---- im2col / col2im over a range of output rows -------------------------------------------------

cdef void im2col_rows(const floating *X, floating *col, Geom *g, Py_ssize_t g0,
                      Py_ssize_t rows) noexcept nogil:
    """col[(r * Wo + ow), :] <- receptive field of output (n, oh, ow), global row g0 + r = n Ho + oh."""
    cdef Py_ssize_t run = g.kw * g.C, C = g.C, r, n, oh, ow, i, ih, iw0, jlo, jhi
    cdef size_t sz = sizeof(floating)
    cdef const floating *img
    cdef floating *dst
    for r in range(rows):
        n = (g0 + r) // g.Ho
        oh = (g0 + r) - n * g.Ho
        img = X + n * g.H * g.W * C
        dst = col + r * g.Wo * g.K
        for ow in range(g.Wo):
            iw0 = ow * g.sw - g.pw
            jlo = -iw0 if iw0 < 0 else 0
            jhi = g.W - iw0 if g.W - iw0 < g.kw else g.kw
            for i in range(g.kh):
                ih = oh * g.sh - g.ph + i
                if ih < 0 or ih >= g.H or jhi <= jlo:
                    memset(dst, 0, run * sz)
                else:
                    if jlo > 0:
                        memset(dst, 0, jlo * C * sz)
                    memcpy(dst + jlo * C, img + (ih * g.W + iw0 + jlo) * C, (jhi - jlo) * C * sz)
                    if jhi < g.kw:
                        memset(dst + jhi * C, 0, (g.kw - jhi) * C * sz)
                dst += run


cdef void col2im_rows(const floating *col, floating *dX, Geom *g, Py_ssize_t g0,
                      Py_ssize_t rows) noexcept nogil:
    """dX[n] += the column gradients of global output rows g0 .. g0 + rows (inverse of im2col)."""
    cdef Py_ssize_t run = g.kw * g.C, C = g.C, r, n, oh, ow, i, ih, iw0, jlo, jhi, k, L
    cdef floating *img
    cdef floating *dst
    cdef const floating *src
    for r in range(rows):
        n = (g0 + r) // g.Ho
        oh = (g0 + r) - n * g.Ho
        img = dX + n * g.H * g.W * C
        src = col + r * g.Wo * g.K
        for ow in range(g.Wo):
            iw0 = ow * g.sw - g.pw
            jlo = -iw0 if iw0 < 0 else 0
            jhi = g.W - iw0 if g.W - iw0 < g.kw else g.kw
            if jhi > jlo:
                L = (jhi - jlo) * C
                for i in range(g.kh):
                    ih = oh * g.sh - g.ph + i
                    if 0 <= ih < g.H:
                        dst = img + (ih * g.W + iw0 + jlo) * C
                        for k in range(L):
                            dst[k] += src[i * run + jlo * C + k]
            src += g.K


# ---- convolution -----------------------------------------------------------------------------

def conv_workspace(Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M,
                   int kh, int kw, int sh, int sw, int ph, int pw, Py_ssize_t itemsize):
    """Workspace sizes for :func:`conv_forward` / :func:`conv_backward`.

    Returns ``(col_rows, K, n_chunks)``: the per-thread column buffer is ``(threads, col_rows, K)``
    (``col_rows`` is 1 for a pointwise convolution, which needs none), the per-chunk partials are
    ``pdW (n_chunks, K, M)`` and ``pdb (n_chunks, M)``.
    """
    cdef Geom g
    _geometry(&g, N, H, W, C, M, kh, kw, sh, sw, ph, pw)
    cdef Py_ssize_t cb = _chunk_images(N)
    cdef Py_ssize_t nchunks = (N + cb - 1) // cb if N > 0 else 1
    cdef Py_ssize_t rows = 1 if _is_pointwise(&g) else _block_rows(&g, itemsize, N * g.Ho) * g.Wo
    return rows, g.K, nchunks


def conv_forward(const floating[:, :, :, ::1] X not None, const floating[:, ::1] W not None,
                 const floating[::1] b not None, floating[:, :, :, ::1] A not None,
                 floating[:, :, ::1] col not None, int kh, int kw, int sh, int sw, int ph, int pw,
                 int kind, double alpha, int num_threads):
    """A (N, Ho, Wo, M) <- g(conv(X (N, H, W, C), W (kh kw C, M)) + b (M,)).

    ``col`` is the per-thread column buffer ``(threads, col_rows, K)`` of :func:`conv_workspace`;
    at most ``col.shape[0]`` threads are used. kind: 0 identity, 1 relu, 2 leaky, 3 sigmoid, 4 tanh.
    """
    cdef Geom g
    _geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], W.shape[1], kh, kw, sh, sw, ph, pw)
    _check_shape("W", (W.shape[0], W.shape[1]), (g.K, g.M))
    _check_shape("b", (b.shape[0],), (g.M,))
    _check_shape("A", (A.shape[0], A.shape[1], A.shape[2], A.shape[3]), (g.N, g.Ho, g.Wo, g.M))
    cdef bint pointwise = _is_pointwise(&g)
    cdef Py_ssize_t R = g.N * g.Ho
    cdef Py_ssize_t br = _block_rows(&g, sizeof(floating), R)
    if not pointwise:
        _check_shape("col", (col.shape[1], col.shape[2]), (br * g.Wo, g.K))
    if col.shape[0] < 1:
        raise ValueError("col must have at least one thread slot")
    if g.N == 0 or g.M == 0:
        return
    cdef Py_ssize_t nb = (R + br - 1) // br, blk, g0, rows, npos
    cdef int nt = num_threads if num_threads < col.shape[0] else <int>col.shape[0]
    cdef int prev, tid
    cdef floating a = <floating>alpha
    cdef const floating *Xp = &X[0, 0, 0, 0]
    cdef const floating *Wp = &W[0, 0]
    cdef const floating *bp = &b[0]
    cdef floating *Ap = &A[0, 0, 0, 0]
    cdef floating *cp
    cdef floating *out
    with nogil:
        for blk in prange(nb, num_threads=nt, schedule='static',
                          use_threads_if=R * g.Wo * g.K * g.M >= PAR_MIN_MACS):
            tid = threadid()
            prev = fnn_blas_single_begin()
            g0 = blk * br
            rows = br if br < R - g0 else R - g0
            npos = rows * g.Wo
            out = Ap + g0 * g.Wo * g.M
            fill_rows(out, npos, g.M, g.M, bp)
            if pointwise:
                gemm_rm(False, False, <int>npos, <int>g.M, <int>g.K, <floating>1,
                        Xp + g0 * g.Wo * g.K, <int>g.K, Wp, <int>g.M, <floating>1, out, <int>g.M)
            else:
                cp = &col[tid, 0, 0]
                im2col_rows(Xp, cp, &g, g0, rows)
                gemm_rm(False, False, <int>npos, <int>g.M, <int>g.K, <floating>1, cp, <int>g.K,
                        Wp, <int>g.M, <floating>1, out, <int>g.M)
            if kind != 0:
                act_forward(out, npos * g.M, kind, a)
            fnn_blas_single_end(prev)


def conv_backward(const floating[:, :, :, ::1] X not None, const floating[:, ::1] W not None,
                  const floating[:, :, :, ::1] A not None, const floating[:, :, :, ::1] dA not None,
                  floating[:, :, :, ::1] dZ not None, floating[:, ::1] dW not None,
                  floating[::1] db not None, floating[:, :, :, ::1] dX,
                  floating[:, :, ::1] col not None, floating[:, :, ::1] pdW not None,
                  floating[:, ::1] pdb not None, int kh, int kw, int sh, int sw, int ph, int pw,
                  int kind, double alpha, int num_threads):
    """Backward of ``A = g(conv(X, W) + b)``.

    dZ <- dA * g'(Z) (from the output A; dZ may be dA itself, and is not written then if kind is 0), dW (K, M) <-
    sum_n col(X_n)^T dZ_n, db (M,) <- sum dZ, and, unless dX is None, dX (N, H, W, C) <- col2im(dZ
    W^T). ``col`` (threads, col_rows, K), ``pdW`` (n_chunks, K, M), ``pdb`` (n_chunks, M) are the
    workspaces of :func:`conv_workspace`.
    """
    cdef Geom g
    _geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], W.shape[1], kh, kw, sh, sw, ph, pw)
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
    cdef bint pointwise = _is_pointwise(&g)
    cdef Py_ssize_t cb = _chunk_images(g.N)
    cdef Py_ssize_t nchunks = (g.N + cb - 1) // cb if g.N > 0 else 1
    cdef Py_ssize_t br = _block_rows(&g, sizeof(floating), cb * g.Ho)
    cdef Py_ssize_t brf = _block_rows(&g, sizeof(floating), g.N * g.Ho)
    if not pointwise:
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
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule='static', use_threads_if=use_threads):
            tid = threadid()
            prev = fnn_blas_single_begin()
            n0 = c * cb
            n1 = n0 + cb if n0 + cb < g.N else g.N
            rows_c = (n1 - n0) * g.Ho
            nblk = (rows_c + br - 1) // br
            cp = &col[tid, 0, 0]
            if need_dx and not pointwise:
                memset(dXp + n0 * img, 0, (n1 - n0) * img * sizeof(floating))
            for blk in range(nblk):
                g0 = n0 * g.Ho + blk * br
                rows = br if br < rows_c - blk * br else rows_c - blk * br
                npos = rows * g.Wo
                p0 = g0 * g.Wo
                z = dZp + p0 * g.M
                if make_dz:
                    act_backward(Ap + p0 * g.M, dAp + p0 * g.M, z, npos * g.M, kind, a)
                # partial dW of this chunk: col^T dZ (the first block overwrites, then accumulates)
                if pointwise:
                    gemm_rm(True, False, <int>g.K, <int>g.M, <int>npos, <floating>1,
                            Xp + p0 * g.K, <int>g.K, z, <int>g.M,
                            <floating>(0 if blk == 0 else 1), &pdW[c, 0, 0], <int>g.M)
                else:
                    im2col_rows(Xp, cp, &g, g0, rows)
                    gemm_rm(True, False, <int>g.K, <int>g.M, <int>npos, <floating>1,
                            cp, <int>g.K, z, <int>g.M,
                            <floating>(0 if blk == 0 else 1), &pdW[c, 0, 0], <int>g.M)
                col_sum(z, npos, g.M, g.M, &pdb[c, 0], blk != 0)
                if need_dx:
                    if pointwise:
                        gemm_rm(False, True, <int>npos, <int>g.K, <int>g.M, <floating>1, z, <int>g.M,
                                Wp, <int>g.M, <floating>0, dXp + p0 * g.K, <int>g.K)
                    else:
                        gemm_rm(False, True, <int>npos, <int>g.K, <int>g.M, <floating>1, z, <int>g.M,
                                Wp, <int>g.M, <floating>0, cp, <int>g.K)
                        col2im_rows(cp, dXp, &g, g0, rows)
            fnn_blas_single_end(prev)

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


# ---- pooling (no padding; windows always inside the input) -----------------------------------

cdef int _pool_geometry(Geom *g, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                        int kh, int kw, int sh, int sw) except -1:
    _geometry(g, N, H, W, C, C, kh, kw, sh, sw, 0, 0)
    return 0


def maxpool_forward(const floating[:, :, :, ::1] X not None, floating[:, :, :, ::1] Y not None,
                    int[:, :, :, ::1] argmax not None, int kh, int kw, int sh, int sw,
                    int num_threads):
    """Y (N, Ho, Wo, C) <- max over each kh x kw window of X (N, H, W, C), stride (sh, sw).

    argmax (N, Ho, Wo, C) <- the flat position ``ih * W + iw`` of the (first) maximum in its image.
    """
    cdef Geom g
    _pool_geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], kh, kw, sh, sw)
    cdef tuple yshape = (g.N, g.Ho, g.Wo, g.C)
    _check_shape("Y", (Y.shape[0], Y.shape[1], Y.shape[2], Y.shape[3]), yshape)
    _check_shape("argmax", (argmax.shape[0], argmax.shape[1], argmax.shape[2], argmax.shape[3]),
                 yshape)
    if g.H * g.W >= 2147483647:
        raise ValueError("image too large for int32 argmax positions")
    cdef Py_ssize_t R = g.N * g.Ho, r, n, oh, ow, i, j, c, ih, iw, C = g.C
    cdef int pos
    cdef const floating *x
    cdef floating *y
    cdef int *ix
    if R == 0 or C == 0:
        return
    with nogil:
        for r in prange(R, num_threads=num_threads, schedule='static',
                        use_threads_if=R * g.Wo * C * g.kh * g.kw >= PAR_MIN_POOL):
            n = r // g.Ho
            oh = r - n * g.Ho
            for ow in range(g.Wo):
                y = &Y[n, oh, ow, 0]
                ix = &argmax[n, oh, ow, 0]
                ih = oh * g.sh
                iw = ow * g.sw
                x = &X[n, ih, iw, 0]
                pos = <int>(ih * g.W + iw)
                for c in range(C):
                    y[c] = x[c]
                    ix[c] = pos
                for i in range(g.kh):
                    for j in range(g.kw):
                        if i == 0 and j == 0:
                            continue
                        x = &X[n, ih + i, iw + j, 0]
                        pos = <int>((ih + i) * g.W + iw + j)
                        for c in range(C):
                            if x[c] > y[c]:
                                y[c] = x[c]
                                ix[c] = pos


def maxpool_backward(const floating[:, :, :, ::1] dY not None, const int[:, :, :, ::1] argmax not None,
                     floating[:, :, :, ::1] dX not None, int num_threads):
    """dX (N, H, W, C) <- 0, then dX[n, argmax[n, oh, ow, c], c] += dY[n, oh, ow, c] (per image,
    in output order)."""
    cdef Py_ssize_t N = dX.shape[0], H = dX.shape[1], W = dX.shape[2], C = dX.shape[3]
    cdef Py_ssize_t Ho = dY.shape[1], Wo = dY.shape[2], n, p, c, P = Ho * Wo
    _check_shape("dY", (dY.shape[0], dY.shape[3]), (N, C))
    _check_shape("argmax", (argmax.shape[0], argmax.shape[1], argmax.shape[2], argmax.shape[3]),
                 (dY.shape[0], dY.shape[1], dY.shape[2], dY.shape[3]))
    cdef floating *img
    cdef const floating *g
    cdef const int *ix
    if N == 0 or C == 0 or H * W == 0:
        return
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule='static',
                        use_threads_if=N * H * W * C >= PAR_MIN_POOL):
            img = &dX[n, 0, 0, 0]
            memset(img, 0, H * W * C * sizeof(floating))
            if P > 0:
                g = &dY[n, 0, 0, 0]
                ix = &argmax[n, 0, 0, 0]
                for p in range(P):
                    for c in range(C):
                        img[ix[p * C + c] * C + c] += g[p * C + c]


def avgpool_forward(const floating[:, :, :, ::1] X not None, floating[:, :, :, ::1] Y not None,
                    int kh, int kw, int sh, int sw, int num_threads):
    """Y (N, Ho, Wo, C) <- mean over each kh x kw window of X (N, H, W, C), stride (sh, sw)."""
    cdef Geom g
    _pool_geometry(&g, X.shape[0], X.shape[1], X.shape[2], X.shape[3], kh, kw, sh, sw)
    _check_shape("Y", (Y.shape[0], Y.shape[1], Y.shape[2], Y.shape[3]), (g.N, g.Ho, g.Wo, g.C))
    cdef Py_ssize_t R = g.N * g.Ho, r, n, oh, ow, i, j, c, C = g.C
    cdef floating inv = <floating>1 / <floating>(g.kh * g.kw)
    cdef const floating *x
    cdef floating *y
    if R == 0 or C == 0:
        return
    with nogil:
        for r in prange(R, num_threads=num_threads, schedule='static',
                        use_threads_if=R * g.Wo * C * g.kh * g.kw >= PAR_MIN_POOL):
            n = r // g.Ho
            oh = r - n * g.Ho
            for ow in range(g.Wo):
                y = &Y[n, oh, ow, 0]
                for c in range(C):
                    y[c] = 0
                for i in range(g.kh):
                    for j in range(g.kw):
                        x = &X[n, oh * g.sh + i, ow * g.sw + j, 0]
                        for c in range(C):
                            y[c] += x[c]
                for c in range(C):
                    y[c] *= inv


def avgpool_backward(const floating[:, :, :, ::1] dY not None, floating[:, :, :, ::1] dX not None,
                     int kh, int kw, int sh, int sw, int num_threads):
    """dX (N, H, W, C) <- 0, then each window of dX += dY[n, oh, ow] / (kh kw) (per image)."""
    cdef Geom g
    _pool_geometry(&g, dX.shape[0], dX.shape[1], dX.shape[2], dX.shape[3], kh, kw, sh, sw)
    _check_shape("dY", (dY.shape[0], dY.shape[1], dY.shape[2], dY.shape[3]), (g.N, g.Ho, g.Wo, g.C))
    cdef Py_ssize_t n, oh, ow, i, j, c, C = g.C
    cdef floating inv = <floating>1 / <floating>(g.kh * g.kw)
    cdef floating *img
    cdef floating *x
    cdef const floating *y
    if g.N == 0 or C == 0:
        return
    with nogil:
        for n in prange(g.N, num_threads=num_threads, schedule='static',
                        use_threads_if=g.N * g.Ho * g.Wo * C * g.kh * g.kw >= PAR_MIN_POOL):
            img = &dX[n, 0, 0, 0]
            memset(img, 0, g.H * g.W * C * sizeof(floating))
            for oh in range(g.Ho):
                for ow in range(g.Wo):
                    y = &dY[n, oh, ow, 0]
                    for i in range(g.kh):
                        for j in range(g.kw):
                            x = img + ((oh * g.sh + i) * g.W + ow * g.sw + j) * C
                            for c in range(C):
                                x[c] += y[c] * inv


def install_blas_hook(size_t addr):
    fnn_install_blas_hook(addr)
