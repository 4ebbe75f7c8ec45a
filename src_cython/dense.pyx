"""Fused dense (fully connected) layer kernels: forward ``A = g(X @ W + b)`` and backward.

Kernels only: every array was checked by fastnn (shape, dtype, C-contiguity) before it gets here.

Parallel design ("one pool"): the work is cut into a fixed number of blocks whose boundaries depend
only on the problem size, never on the thread count, so results are bit-identical for any number
of threads. Each OpenMP thread takes whole blocks and calls BLAS single-threaded on them. A block
is a band of rows, or, when the batch is small, a band of output columns (then the small input is
what gets packed twice, not the weight matrix).
"""
from cython cimport floating
from cython.parallel cimport prange
from _blas cimport gemm_rm, gemm_kernel_name, bf16_kernel_name, packed_bf16_data, fnn_blas_single_begin, fnn_blas_single_enter, fnn_blas_single_end, fnn_install_blas_hook
from _simd cimport act_forward, act_forward_keep, act_backward, fill_rows, col_sum

# Below this many multiply-adds a kernel runs on one thread (OpenMP fork/join costs ~2-5 us).
cdef Py_ssize_t PAR_MIN_MACS = 1 << 16
# Blocks per GEMM. Each block packs one operand again, so fewer blocks are faster on one thread;
# measured on 2 cores (256x784x256 forward, 1 thread): 1 block 645 us, 2 blocks 746, 4 blocks 856.
# Forward: 2 blocks. Backward: dX and dW are already two independent GEMMs of equal size, so each
# is one block (the dW of a first layer, which has no dX, is split in two).
cdef Py_ssize_t NBLOCKS = 2


cdef inline Py_ssize_t block_size(Py_ssize_t n, Py_ssize_t align, Py_ssize_t nblocks=NBLOCKS) noexcept nogil:
    """About ``nblocks`` blocks of a multiple of ``align`` (a function of n only)."""
    cdef Py_ssize_t c = (n + nblocks - 1) // nblocks
    c = ((c + align - 1) // align) * align
    return c if c > 0 else align


cdef void forward_block(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                        floating[:, ::1] A, Py_ssize_t r0, Py_ssize_t rows, Py_ssize_t c0,
                        Py_ssize_t cols, int kind, floating alpha, floating *Zp,
                        bint bf16, const unsigned short *Wpk) noexcept nogil:
    """Zp: NULL, or the (N, M) buffer that keeps the pre-activation (gelu, silu)."""
    cdef Py_ssize_t K = X.shape[1], M = W.shape[1], r
    fill_rows(&A[r0, c0], rows, cols, M, &b[c0])
    gemm_rm(False, False, <int>rows, <int>cols, <int>K, <floating>1, &X[r0, 0], <int>K,
            &W[0, c0], <int>M, <floating>1, &A[r0, c0], <int>M, bf16, Wpk, (M + 31) // 32, c0 // 32)
    if kind != 0:
        if Zp != NULL:
            for r in range(r0, r0 + rows):
                act_forward_keep(&A[r, c0], Zp + r * M + c0, cols, kind, alpha)
        elif cols == M:
            act_forward(&A[r0, 0], rows * M, kind, alpha)
        else:
            for r in range(r0, r0 + rows):
                act_forward(&A[r, c0], cols, kind, alpha)


def forward(const floating[:, ::1] X not None, const floating[:, ::1] W not None,
            const floating[::1] b not None, floating[:, ::1] A not None,
            int kind, double alpha, int num_threads, floating[:, ::1] Z=None, bint bf16=False,
            const unsigned short[::1] Wpk=None):
    """A (N, M) <- g(X (N, K) @ W (K, M) + b (M,)); kind: a code of simd.h's activation list.

    ``bf16`` (float32): the GEMM's inputs X and W rounded to bfloat16, float32 sums (bgemm.h);
    the bias and the activation in float32. ``Wpk`` (with ``bf16``, optional): W as
    ``fastnn._gemm.pack_bf16(W, False, Wpk)`` packed it, so no block packs W again.

    Z (N, M), optional: for the activations whose derivative needs the pre-activation (gelu,
    silu: ``fastnn._activations.activations_from_z()``) it receives ``X @ W + b``, written in the
    activation's loop; ignored (not written) for the others.
    """
    cdef Py_ssize_t N = X.shape[0], K = X.shape[1], M = W.shape[1]
    cdef bint by_cols = N < M
    # column blocks start on a panel of the packed W (32 columns) in bfloat16
    cdef Py_ssize_t bs = block_size(M, 32 if bf16 else 16) if by_cols else block_size(N, 8)
    cdef Py_ssize_t total = M if by_cols else N
    cdef Py_ssize_t nb = (total + bs - 1) // bs, i, start, size
    cdef int prev
    cdef floating a = <floating>alpha
    cdef floating *Zp = NULL
    if W.shape[0] != K or b.shape[0] != M or A.shape[0] != N or A.shape[1] != M:
        raise ValueError(f"dense.forward: shapes X ({N}, {K}), W ({W.shape[0]}, {W.shape[1]}), "
                         f"b ({b.shape[0]},), A ({A.shape[0]}, {A.shape[1]}) do not fit")
    if Z is not None and (Z.shape[0] != N or Z.shape[1] != M):
        raise ValueError(f"dense.forward: Z has shape ({Z.shape[0]}, {Z.shape[1]}), expected "
                         f"({N}, {M})")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef const unsigned short *wpk = packed_bf16_data(Wpk, K, M, bf16, "Wpk")
    if N == 0 or M == 0:
        return
    if Z is not None:
        Zp = &Z[0, 0]
    if K == 0:  # no inputs: A = g(b) (no GEMM, and no pointer into an empty axis)
        with nogil:
            fill_rows(&A[0, 0], N, M, M, &b[0])
            act_forward_keep(&A[0, 0], Zp, N * M, kind, a)
        return
    with nogil:
        prev = fnn_blas_single_begin()  # the main thread; see fnn_omp.h
        for i in prange(nb, num_threads=num_threads, schedule='static',
                        use_threads_if=N * K * M >= PAR_MIN_MACS):
            fnn_blas_single_enter()
            start = i * bs
            size = min(bs, total - start)
            if by_cols:
                forward_block(X, W, b, A, 0, N, start, size, kind, a, Zp, bf16, wpk)
            else:
                forward_block(X, W, b, A, start, size, 0, M, kind, a, Zp, bf16, wpk)
        fnn_blas_single_end(prev)


def backward(const floating[:, ::1] X not None, const floating[:, ::1] W not None,
             const floating[:, ::1] A not None, const floating[:, ::1] dA not None,
             floating[:, ::1] dZ not None, floating[:, ::1] dW not None, floating[::1] db not None,
             floating[:, ::1] dX, int kind, double alpha, int num_threads, bint bf16=False,
             const unsigned short[::1] WTpk=None):
    """Backward of ``A = g(X @ W + b)``. ``bf16`` (float32): the GEMMs' inputs (dZ, W, X) rounded
    to bfloat16, float32 sums (bgemm.h); dZ and db in float32. ``WTpk`` (with ``bf16``,
    optional): W^T as ``fastnn._gemm.pack_bf16(W, True, WTpk)`` packed it, for dX.

    dZ (N, M) <- dA * g'(Z) (g' from the output A, or, for gelu and silu, from the pre-activation
    Z that ``forward`` kept, passed in place of A; dZ may be dA itself), then
    dW (K, M) <- X^T dZ, db (M,) <- sum_n dZ, and, unless dX is None, dX (N, K) <- dZ W^T.
    """
    cdef Py_ssize_t N = X.shape[0], K = X.shape[1], M = W.shape[1]
    cdef bint use_threads = N * K * M >= PAR_MIN_MACS
    cdef bint need_dx = dX is not None
    cdef floating a = <floating>alpha
    cdef Py_ssize_t rb = block_size(N, 8), nrb = (N + rb - 1) // rb
    cdef Py_ssize_t i, start, size
    cdef int prev
    # dX (N, K) = dZ W^T: one block (its rows when the batch is large, else its columns)
    cdef bint dx_by_cols = N < K
    cdef Py_ssize_t dxb = K if dx_by_cols else N
    cdef Py_ssize_t dxn = 1 if need_dx else 0
    # dW (K, M) = X^T dZ: one block, or two without dX; split the smaller packing
    # (dZ is N x M, X is N x K). In bfloat16 always two: dW's float32 output then costs far
    # more than the dX task beside it (a split changes no bit: every C element is summed alike)
    cdef Py_ssize_t dw_blocks = 1 if need_dx and not bf16 else 2
    cdef bint dw_by_cols = M >= K
    cdef Py_ssize_t dwb = block_size(M, 16, dw_blocks) if dw_by_cols else block_size(K, 8, dw_blocks)
    cdef Py_ssize_t dwn = ((M if dw_by_cols else K) + dwb - 1) // dwb
    cdef Py_ssize_t ntasks = dxn + dwn + 1
    if (W.shape[0] != K or A.shape[0] != N or A.shape[1] != M or dA.shape[0] != N
            or dA.shape[1] != M or dZ.shape[0] != N or dZ.shape[1] != M or dW.shape[0] != K
            or dW.shape[1] != M or db.shape[0] != M
            or (need_dx and (dX.shape[0] != N or dX.shape[1] != K))):
        raise ValueError("dense.backward: array shapes do not fit X (N, K) and W (K, M)")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef const unsigned short *wtpk = packed_bf16_data(WTpk, M, K, bf16, "WTpk")
    if N == 0:  # an empty batch contributes nothing
        dW[:, :] = 0
        db[:] = 0
        return
    if M == 0:  # no outputs: nothing flows back
        if need_dx:
            dX[:, :] = 0
        return
    if K == 0:  # no inputs: only the bias has a gradient
        with nogil:
            act_backward(&A[0, 0], &dA[0, 0], &dZ[0, 0], N * M, kind, a)
            col_sum(&dZ[0, 0], N, M, M, &db[0], False)
        return
    with nogil:
        prev = fnn_blas_single_begin()  # the main thread; see fnn_omp.h
        # 1) dZ, elementwise in row blocks
        if kind != 0 or &dZ[0, 0] != &dA[0, 0]:
            for i in prange(nrb, num_threads=num_threads, schedule='static',
                            use_threads_if=use_threads):
                start = i * rb
                size = min(rb, N - start)
                act_backward(&A[start, 0], &dA[start, 0], &dZ[start, 0], size * M, kind, a)
        # 2) independent GEMM blocks of dX and dW, and the bias sum, as one list of tasks
        for i in prange(ntasks, num_threads=num_threads, schedule='dynamic', chunksize=1,
                        use_threads_if=use_threads):
            fnn_blas_single_enter()
            if i < dxn:
                start = i * dxb
                if dx_by_cols:
                    size = min(dxb, K - start)
                    gemm_rm(False, True, <int>N, <int>size, <int>M, <floating>1, &dZ[0, 0], <int>M,
                            &W[start, 0], <int>M, <floating>0, &dX[0, start], <int>K, bf16,
                            wtpk, (K + 31) // 32, start // 32)
                else:
                    size = min(dxb, N - start)
                    gemm_rm(False, True, <int>size, <int>K, <int>M, <floating>1, &dZ[start, 0],
                            <int>M, &W[0, 0], <int>M, <floating>0, &dX[start, 0], <int>K, bf16,
                            wtpk, (K + 31) // 32, 0)
            elif i < dxn + dwn:
                start = (i - dxn) * dwb
                if dw_by_cols:
                    size = min(dwb, M - start)
                    gemm_rm(True, False, <int>K, <int>size, <int>N, <floating>1, &X[0, 0], <int>K,
                            &dZ[0, start], <int>M, <floating>0, &dW[0, start], <int>M, bf16)
                else:
                    size = min(dwb, K - start)
                    gemm_rm(True, False, <int>size, <int>M, <int>N, <floating>1, &X[0, start],
                            <int>K, &dZ[0, 0], <int>M, <floating>0, &dW[start, 0], <int>M, bf16)
            else:
                col_sum(&dZ[0, 0], N, M, M, &db[0], False)
        fnn_blas_single_end(prev)


def install_blas_hook(size_t addr):
    fnn_install_blas_hook(addr)


def gemm_kernel(int level=-2):
    """This module's float32 GEMM kernel (see fastnn._gemm.gemm_kernel)."""
    return gemm_kernel_name(level)


def bf16_kernel(int level=-2):
    """This module's bfloat16 GEMM kernel (see fastnn._gemm.bf16_kernel)."""
    return bf16_kernel_name(level)
