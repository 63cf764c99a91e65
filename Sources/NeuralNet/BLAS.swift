import COpenBLAS
import Dispatch

/// C = alpha · op(A) · op(B) + beta · C, row-major: op(A) is M×K, op(B) is K×N, C is M×N.
@inline(__always)
func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
          alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int,
          _ b: UnsafePointer<Float>, ldb: Int,
          beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// `gemm` split between the training threads: the larger of M and N in parts of whole
/// rows or columns, each part one single-threaded OpenBLAS call on a pool thread (every C
/// entry is still one call's sum over the whole of K).
@inline(__always)
func trainingGemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                  _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    let t = trainingThreads
    // Below about a million multiply-adds one call is cheaper than a hand-over.
    guard t > 1, m * n * k >= 1 << 20 else {
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, beta: beta, c, ldc: ldc)
        return
    }
    if m >= n {
        parallel(t, t) { i in
            let r = split(m, t, i, align: 8)
            guard !r.isEmpty else { return }
            gemm(transA: transA, transB: transB, m: r.count, n: n, k: k, transA ? a + r.lowerBound : a + r.lowerBound * lda, lda: lda,
                 b, ldb: ldb, beta: beta, c + r.lowerBound * ldc, ldc: ldc)
        }
    } else {
        parallel(t, t) { i in
            let r = split(n, t, i, align: 16)
            guard !r.isEmpty else { return }
            gemm(transA: transA, transB: transB, m: m, n: r.count, k: k, a, lda: lda,
                 transB ? b + r.lowerBound * ldb : b + r.lowerBound, ldb: ldb, beta: beta, c + r.lowerBound, ldc: ldc)
        }
    }
}

/// Threads of the training layers: their own loops and their GEMMs (`trainingGemm`) are
/// split between the pool's threads, while OpenBLAS itself runs on one thread: its idle
/// workers spin for a while after each call, and on two cores they took the core the
/// pool's worker needed (2 threads were only 1.15x faster than 1).
nonisolated(unsafe) public private(set) var trainingThreadCount = 1

public func setTrainingThreads(_ n: Int) {
    trainingThreadCount = max(1, n)
    openblas_set_num_threads(1)
}

public enum TrainingThreads {
    /// Another count for the current task only (tests compare counts without changing the
    /// process-wide setting other tests run under).
    @TaskLocal public static var override: Int?
}

/// The threads of the training layers (`setTrainingThreads`, `--threads`).
@inline(__always)
var trainingThreads: Int { TrainingThreads.override ?? trainingThreadCount }

#if canImport(Glibc)
import Glibc
#endif

/// Keeps freed tensor memory in the process for reuse. glibc otherwise returns every
/// large block to the kernel at once, and the next forward pass pays page faults and
/// page zeroing for memory it just had (over a quarter of an encode, measured).
public func retainFreedMemory() {
    #if os(Linux)
    // glibc's <malloc.h> values: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3.
    _ = glibcMallopt(-3, 32 << 20)
    _ = glibcMallopt(-1, 1 << 30)
    #endif
}

#if os(Linux)
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

/// OpenBLAS's worker threads for every following call (0 keeps its default).
public func setBLASThreads(_ n: Int) {
    if n > 0 { openblas_set_num_threads(Int32(n)) }
}

/// The number of threads OpenBLAS uses.
public var blasThreads: Int { Int(openblas_get_num_threads()) }

/// Time and arithmetic spent in convolution forwards, for benchmarks. Off by default;
/// not synchronised (turn it on only in a single-threaded measurement).
public enum ConvProfiler {
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) public static var nanoseconds: UInt64 = 0
    nonisolated(unsafe) public static var flops: Double = 0

    public static func reset() {
        nanoseconds = 0
        flops = 0
    }

    /// GFLOP/s over what was recorded.
    public static var gflops: Double { nanoseconds == 0 ? 0 : flops / Double(nanoseconds) }

    @inline(__always)
    static func record(start: UInt64, flops f: Double) {
        nanoseconds &+= DispatchTime.now().uptimeNanoseconds &- start
        flops += f
    }
}

/// GFLOP/s of one n × n × n sgemm, the best of `repeats` runs.
public func measureSgemmGFLOPs(n: Int = 1024, repeats: Int = 3) -> Double {
    var a = [Float](repeating: 0, count: n * n), b = a, c = a
    for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.1; b[i] = Float(i % 5) * 0.2 }
    var best = Double.infinity
    for _ in 0..<repeats {
        let t = DispatchTime.now().uptimeNanoseconds
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            gemm(m: n, n: n, k: n, ap.baseAddress!, lda: n, bp.baseAddress!, ldb: n, cp.baseAddress!, ldc: n)
        }}}
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t))
    }
    return 2 * Double(n * n * n) / best
}
