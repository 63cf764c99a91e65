/// Layers in a row, each under a name (nil for layers without tensors), so that
/// parameter names read like a PyTorch `state_dict`: `conv1.weight`,
/// `resnet_blocks.0.conv1_norm.running_mean`.
public final class Chain: Layer {
    public var children: [(name: String?, layer: Layer)]
    public var training: Bool = true {
        didSet { for c in children { c.layer.training = training } }
    }

    public init(_ children: [(String?, Layer)]) {
        self.children = children.map { (name: $0.0, layer: $0.1) }
    }

    /// Children named by their index, like `nn.Sequential`.
    public convenience init(indexed layers: [Layer]) {
        self.init(layers.enumerated().map { (String($0.offset), $0.element) })
    }

    public func forward(_ x: Tensor) -> Tensor {
        children.reduce(x) { x, c in LayerProfiler.measure(c.layer, "fwd", x) { c.layer.forward(x) } }
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        children.reversed().reduce(gradOutput) { g, c in LayerProfiler.measure(c.layer, "bwd", g) { c.layer.backward(g) } }
    }

    public var parameters: [(String, Parameter)] {
        children.flatMap { c in c.layer.parameters.map { (prefixed(c.name, $0.0), $0.1) } }
    }

    public var buffers: [(String, Buffer)] {
        children.flatMap { c in c.layer.buffers.map { (prefixed(c.name, $0.0), $0.1) } }
    }
}

@inline(__always)
func prefixed(_ prefix: String?, _ name: String) -> String {
    guard let prefix, !prefix.isEmpty else { return name }
    return prefix + "." + name
}

/// y = x + block(x), a ResNet block with an identity shortcut; the block's tensors keep
/// their names (prefixed by `name` if one is given).
public final class ResidualBlock: Layer {
    public let block: Layer
    public let name: String?
    public var training: Bool {
        get { block.training }
        set { block.training = newValue }
    }

    public init(_ block: Layer, name: String? = nil) {
        self.block = block
        self.name = name
    }

    public func forward(_ x: Tensor) -> Tensor { Residual.add(x, block.forward(x)) }
    public func backward(_ g: Tensor) -> Tensor { Residual.add(g, block.backward(g)) }
    public var parameters: [(String, Parameter)] { block.parameters.map { (prefixed(name, $0.0), $0.1) } }
    public var buffers: [(String, Buffer)] { block.buffers.map { (prefixed(name, $0.0), $0.1) } }
}

/// A failure to load tensors into a layer tree.
public struct StateDictError: Error, CustomStringConvertible {
    public let description: String
}

extension Layer {
    /// Every parameter and buffer by name.
    public func stateDict() -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (n, p) in parameters { d[n] = p.value }
        for (n, b) in buffers { d[n] = b.value }
        return d
    }

    /// Sets every parameter and buffer from `state` (names under `prefix`); each must be
    /// present with the right shape. With `strict`, a tensor under `prefix` that the
    /// layer does not have is an error too.
    public func load(_ state: [String: Tensor], prefix: String = "", strict: Bool = true) throws {
        var used = Set<String>()
        func take(_ name: String, _ shape: [Int]) throws -> Tensor {
            let key = prefix + name
            guard let t = state[key] else { throw StateDictError(description: "missing tensor \(key)") }
            guard t.shape == shape else {
                throw StateDictError(description: "tensor \(key) has shape \(t.shape), the model needs \(shape)")
            }
            used.insert(key)
            return t
        }
        for (n, p) in parameters { p.value = try take(n, p.value.shape) }
        for (n, b) in buffers { b.value = try take(n, b.value.shape) }
        if strict {
            let extra = state.keys.filter { $0.hasPrefix(prefix) && !used.contains($0) && !$0.hasSuffix("num_batches_tracked") }
            if let e = extra.sorted().first {
                throw StateDictError(description: "unexpected tensor \(e) (\(extra.count) not used by the model)")
            }
        }
    }

    /// Every parameter's gradient set to zero.
    public func zeroGrad() { parameters.forEach { $0.1.zeroGrad() } }
}
