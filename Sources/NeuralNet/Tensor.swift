import COpenBLAS

/// A dense float32 tensor, row-major (NCHW for images). Storage is a copy-on-write
/// array: reshaping or passing a tensor around shares it; only a write copies.
public struct Tensor: Equatable, CustomStringConvertible {
    public private(set) var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count, "shape \(shape) does not hold \(data.count) values")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.shape = shape
        self.data = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    /// A tensor whose values the caller overwrites completely before reading them.
    public init(uninitialized shape: [Int]) {
        self.shape = shape
        self.data = [Float](unsafeUninitializedCapacity: shape.reduce(1, *)) { _, n in n = shape.reduce(1, *) }
    }

    public init(repeating value: Float, shape: [Int]) {
        self.shape = shape
        self.data = [Float](repeating: value, count: shape.reduce(1, *))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The same values under another shape of equal size (no copy).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }

    /// Dimension i of an NCHW tensor.
    @inline(__always) public var n: Int { shape[0] }
    @inline(__always) public var c: Int { shape[1] }
    @inline(__always) public var h: Int { shape[2] }
    @inline(__always) public var w: Int { shape[3] }

    public var description: String { "Tensor\(shape)" }

    /// Adds `other` into this tensor element-wise (same shape).
    public mutating func accumulate(_ other: Tensor) {
        precondition(shape == other.shape, "accumulate: \(shape) vs \(other.shape)")
        data.withUnsafeMutableBufferPointer { d in
            other.data.withUnsafeBufferPointer { o in
                cblas_saxpy(Int32(d.count), 1, o.baseAddress, 1, d.baseAddress, 1)
            }
        }
    }

    public mutating func zero() {
        data.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }
}

/// A trainable tensor with its gradient. Backward passes add into `grad`;
/// `zeroGrad()` clears it (a separate call, so gradients can accumulate).
public final class Parameter {
    public var value: Tensor
    /// Made (zeros) when first used: inference never allocates it.
    public lazy var grad: Tensor = Tensor(zeros: value.shape)

    public init(_ value: Tensor) {
        self.value = value
    }

    public func zeroGrad() { grad.zero() }
}

/// A non-trainable tensor a layer keeps (BatchNorm's running statistics).
public final class Buffer {
    public var value: Tensor
    public init(_ value: Tensor) { self.value = value }
}

/// Every layer: `forward` keeps what `backward` needs; `backward` takes the gradient of
/// the loss with respect to the output, adds parameter gradients into each
/// `Parameter.grad`, and returns the gradient with respect to the input.
public protocol Layer: AnyObject {
    func forward(_ x: Tensor) -> Tensor
    func backward(_ gradOutput: Tensor) -> Tensor
    /// Named parameters, PyTorch `state_dict` names relative to this layer.
    var parameters: [(String, Parameter)] { get }
    /// Named buffers (running statistics), PyTorch names.
    var buffers: [(String, Buffer)] { get }
    /// Training mode (batch statistics, dropout) or inference.
    var training: Bool { get set }
}

extension Layer {
    public var parameters: [(String, Parameter)] { [] }
    public var buffers: [(String, Buffer)] { [] }
}

/// Stateless layers keep their mode here.
open class StatelessLayer {
    public var training = true
    public init() {}
}
