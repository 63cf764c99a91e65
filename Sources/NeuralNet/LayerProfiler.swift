import Dispatch

/// Time spent in each layer of `Chain`s, forward and backward, for `gdh bench train
/// --layers`. A layer's own (exclusive) time: what its inner chains record is not counted
/// twice. Keyed by the layer's type, its shape-defining settings and its input shape. Off
/// by default; not synchronised (turn it on only around single-caller measurements).
public enum LayerProfiler {
    nonisolated(unsafe) public static var enabled = false
    public struct Entry: Sendable {
        public var nanoseconds: UInt64 = 0
        public var calls = 0
    }
    nonisolated(unsafe) public private(set) static var entries: [String: Entry] = [:]
    nonisolated(unsafe) private static var childTime: [UInt64] = []

    public static func reset() {
        entries = [:]
        childTime = []
    }

    @inline(__always)
    static func measure(_ layer: Layer, _ direction: String, _ x: Tensor, _ body: () -> Tensor) -> Tensor {
        guard enabled, !(layer is Chain) else { return body() }
        childTime.append(0)
        let start = DispatchTime.now().uptimeNanoseconds
        let y = body()
        let total = DispatchTime.now().uptimeNanoseconds - start
        let inner = childTime.removeLast()
        if !childTime.isEmpty { childTime[childTime.count - 1] += total }
        let key = "\(direction) \(describe(layer)) \(x.shape.map(String.init).joined(separator: "x"))"
        entries[key, default: Entry()].nanoseconds += total - min(total, inner)
        entries[key, default: Entry()].calls += 1
        return y
    }

    static func describe(_ layer: Layer) -> String {
        switch layer {
        case let c as Conv2d: return "Conv2d(\(c.inChannels)->\(c.outChannels) k\(c.kernelH) s\(c.stride) p\(c.padding)\(c.paddingMode == .reflect ? "r" : ""))"
        case let c as ConvTranspose2d: return "ConvTranspose2d(\(c.inChannels)->\(c.outChannels) k\(c.kernel) s\(c.stride))"
        default: return String(describing: type(of: layer))
        }
    }
}
