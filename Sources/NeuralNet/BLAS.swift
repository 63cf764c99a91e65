import COpenBLAS

/// C = alpha · op(A) · op(B) + beta · C, row-major: op(A) is M×K, op(B) is K×N, C is M×N.
@inline(__always)
func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
          alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int,
          _ b: UnsafePointer<Float>, ldb: Int,
          beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// OpenBLAS's worker threads for every following call (0 keeps its default).
public func setBLASThreads(_ n: Int) {
    if n > 0 { openblas_set_num_threads(Int32(n)) }
}

/// The number of threads OpenBLAS uses.
public var blasThreads: Int { Int(openblas_get_num_threads()) }
