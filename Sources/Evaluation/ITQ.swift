import COpenBLAS
import Foundation
import HammingCode

#if canImport(Glibc)
import Glibc
#endif

/// A failure of the linear algebra behind PCA and ITQ.
public struct LinearAlgebraError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Iterative quantization (Gong & Lazebnik, CVPR 2011): PCA of the centred features to
/// `bits` dimensions (V = (X − mean) W), then a rotation R that minimises the
/// quantization loss ‖B − V R‖², alternating B = sign(V R) and R = U Ŵᵀ from the SVD
/// Vᵀ B = U Σ Ŵᵀ, from a seeded random orthogonal R. Code bit i = 1 where
/// ((x − mean) W R)_i > 0 (the bit order of `GDHEncoder.codes`).
public struct ITQ: Sendable {
    public let dimension: Int
    public let bits: Int
    /// The training mean, `dimension` values.
    public let mean: [Float]
    /// W R, row-major `dimension` × `bits`.
    public let projection: [Float]
    /// ‖B − V R‖² / n after each iteration.
    public let quantizationLoss: [Double]

    /// Fits on `count` rows of `dimension` features (row-major in `features`).
    public static func fit(_ features: [Float], count n: Int, dimension d: Int, bits b: Int,
                           iterations: Int = 50, seed: UInt64) throws -> ITQ {
        guard n >= 2 else { throw LinearAlgebraError("ITQ needs at least 2 training items, got \(n)") }
        guard features.count == n * d else { throw LinearAlgebraError("expected \(n) × \(d) features, got \(features.count) values") }
        guard b <= d else { throw LinearAlgebraError("cannot project \(d) features to \(b) bits: need at least as many features as bits") }
        // One OpenBLAS thread, as every other in-process user sets it: its sums depend on
        // the thread count, and over 50 iterations a last-bit difference flipped about 3% of
        // the code bits between two fits with one seed when another caller had changed it.
        openblas_set_num_threads(1)
        let (mean, centred) = centre(features, count: n, dimension: d)
        let w = try principalComponents(centred, count: n, dimension: d, components: b)
        let v = multiply(centred, w, m: n, k: d, n: b)
        var rng = SplitMix64(seed: seed)
        var r = try polarFactor((0..<(b * b)).map { _ in gaussian(&rng) }, size: b)
        var losses: [Double] = []
        var signs = [Float](repeating: 0, count: n * b)
        for _ in 0..<iterations {
            let vr = multiply(v, r, m: n, k: b, n: b)
            var loss = 0.0
            for i in vr.indices {
                signs[i] = vr[i] > 0 ? 1 : -1
                loss += Double((signs[i] - vr[i]) * (signs[i] - vr[i]))
            }
            losses.append(loss / Double(n))
            // Vᵀ B, b × b.
            let vtb = multiply(v, signs, m: b, k: n, n: b, transposeA: true)
            r = try polarFactor(vtb, size: b)
        }
        return ITQ(dimension: d, bits: b, mean: mean, projection: multiply(w, r, m: d, k: b, n: b), quantizationLoss: losses)
    }

    /// (x − mean) W R for `count` rows, row-major count × bits.
    public func project(_ features: [Float], count n: Int) -> [Float] {
        precondition(features.count == n * dimension, "expected \(n) × \(dimension) features")
        var centred = features
        for i in 0..<n { for j in 0..<dimension { centred[i * dimension + j] -= mean[j] } }
        return ITQ.multiply(centred, projection, m: n, k: dimension, n: bits)
    }

    /// The codes of `count` feature rows.
    public func codes(_ features: [Float], count n: Int) throws -> [HammingCode] {
        let width = try CodeWidth(bits: bits)
        let p = project(features, count: n)
        return (0..<n).map { row in
            var words = [UInt64](repeating: 0, count: width.words)
            for i in 0..<bits where p[row * bits + i] > 0 { words[i >> 6] |= UInt64(1) << UInt64(63 - (i & 63)) }
            return HammingCode(width: width, words: words)
        }
    }

    static func centre(_ x: [Float], count n: Int, dimension d: Int) -> (mean: [Float], centred: [Float]) {
        var mean = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { mean[j] += Double(x[i * d + j]) } }
        let m = mean.map { Float($0 / Double(n)) }
        var c = x
        for i in 0..<n { for j in 0..<d { c[i * d + j] -= m[j] } }
        return (m, c)
    }

    /// The `components` leading eigenvectors of the covariance XᵀX / (n − 1), as the
    /// columns of a row-major d × components matrix, largest eigenvalue first.
    static func principalComponents(_ x: [Float], count n: Int, dimension d: Int, components b: Int) throws -> [Float] {
        var cov = [Float](repeating: 0, count: d * d)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(n), 1 / Float(n - 1), x, Int32(d), 0, &cov, Int32(d))
        // Mirror the upper triangle so the buffer is symmetric whatever the storage order.
        for i in 0..<d { for j in 0..<i { cov[i * d + j] = cov[j * d + i] } }
        let eigenvectors = try LAPACK.symmetricEigenvectors(&cov, size: d)
        var w = [Float](repeating: 0, count: d * b)
        for j in 0..<b {
            let k = d - 1 - j  // ascending eigenvalues: the largest come last
            for i in 0..<d { w[i * b + j] = eigenvectors[k * d + i] }
        }
        return w
    }

    /// The orthogonal matrix nearest to a square row-major matrix M: U Ŵᵀ from M = U Σ Ŵᵀ
    /// (also the R maximising tr(Mᵀ R)). LAPACK sees the row-major buffer as Mᵀ = Ŵ Σ Uᵀ
    /// and returns u = Ŵ, vt = Uᵀ; the column-major product u · vt is Ŵ Uᵀ = (U Ŵᵀ)ᵀ,
    /// which read row-major is U Ŵᵀ.
    static func polarFactor(_ m: [Float], size b: Int) throws -> [Float] {
        let (u, vt) = try LAPACK.svd(m, size: b)
        var r = [Float](repeating: 0, count: b * b)
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, Int32(b), Int32(b), Int32(b), 1, u, Int32(b), vt, Int32(b), 0, &r, Int32(b))
        return r
    }

    /// Row-major (m × k) · (k × n), or Aᵀ · B with A stored k × m when `transposeA`.
    static func multiply(_ a: [Float], _ b: [Float], m: Int, k: Int, n: Int, transposeA: Bool = false) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(transposeA ? m : k), b, Int32(n), 0, &c, Int32(n))
        return c
    }

    /// A standard normal sample (Box-Muller).
    static func gaussian(_ rng: inout SplitMix64) -> Float {
        let u1 = (Double(rng.next() >> 11) + 1) / 9_007_199_254_740_993.0
        let u2 = Double(rng.next() >> 11) / 9_007_199_254_740_992.0
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

/// The two LAPACK routines ITQ needs, looked up in the process's OpenBLAS (which exports
/// them; its headers here declare only CBLAS). Called through C function pointers, so
/// the calling convention is C's. Integers are 32-bit (OpenBLAS without INTERFACE64);
/// the trailing size_t arguments are the Fortran lengths of the character arguments.
enum LAPACK {
    typealias Ssyev = @convention(c) (
        UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafePointer<Int32>, UnsafeMutablePointer<Float>,
        UnsafePointer<Int32>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafePointer<Int32>,
        UnsafeMutablePointer<Int32>, Int, Int) -> Void
    typealias Sgesvd = @convention(c) (
        UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafePointer<Int32>, UnsafePointer<Int32>,
        UnsafeMutablePointer<Float>, UnsafePointer<Int32>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
        UnsafePointer<Int32>, UnsafeMutablePointer<Float>, UnsafePointer<Int32>, UnsafeMutablePointer<Float>,
        UnsafePointer<Int32>, UnsafeMutablePointer<Int32>, Int, Int) -> Void

    static func symbol<T>(_ name: String, as type: T.Type) throws -> T {
        // OpenBLAS is linked into the process (this module calls its CBLAS routines).
        guard let handle = dlopen(nil, RTLD_NOW), let p = dlsym(handle, name) else {
            throw LinearAlgebraError("LAPACK routine \(name) not found in the loaded OpenBLAS")
        }
        return unsafeBitCast(p, to: type)
    }

    /// Eigen-decomposition of a symmetric n × n matrix (overwritten): the eigenvectors,
    /// column-major (vector k at [k·n, (k+1)·n)), for ascending eigenvalues.
    static func symmetricEigenvectors(_ a: inout [Float], size n: Int) throws -> [Float] {
        let ssyev = try symbol("ssyev_", as: Ssyev.self)
        var nn = Int32(n), lwork = Int32(-1), info = Int32(0)
        var w = [Float](repeating: 0, count: n)
        var query: Float = 0
        ssyev("V", "U", &nn, &a, &nn, &w, &query, &lwork, &info, 1, 1)
        lwork = Int32(max(Int(query), 3 * n))
        var work = [Float](repeating: 0, count: Int(lwork))
        ssyev("V", "U", &nn, &a, &nn, &w, &work, &lwork, &info, 1, 1)
        guard info == 0 else { throw LinearAlgebraError("ssyev failed (info \(info)) on a \(n) × \(n) covariance") }
        return a
    }

    /// SVD of a square column-major matrix: (u, vt), both column-major.
    static func svd(_ matrix: [Float], size n: Int) throws -> (u: [Float], vt: [Float]) {
        let sgesvd = try symbol("sgesvd_", as: Sgesvd.self)
        var a = matrix
        var nn = Int32(n), lwork = Int32(-1), info = Int32(0)
        var s = [Float](repeating: 0, count: n), u = [Float](repeating: 0, count: n * n), vt = u
        var query: Float = 0
        sgesvd("A", "A", &nn, &nn, &a, &nn, &s, &u, &nn, &vt, &nn, &query, &lwork, &info, 1, 1)
        lwork = Int32(max(Int(query), 5 * n))
        var work = [Float](repeating: 0, count: Int(lwork))
        a = matrix
        sgesvd("A", "A", &nn, &nn, &a, &nn, &s, &u, &nn, &vt, &nn, &work, &lwork, &info, 1, 1)
        guard info == 0 else { throw LinearAlgebraError("sgesvd failed (info \(info)) on a \(n) × \(n) matrix") }
        return (u, vt)
    }
}
