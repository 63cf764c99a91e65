/// Layers in a row, named by index like PyTorch's `nn.Sequential` (`0.weight`, `3.bias`).
public final class Sequential: Layer {
    public var layers: [Layer]
    public var training: Bool {
        didSet { for l in layers { l.training = training } }
    }

    public init(_ layers: [Layer]) {
        self.layers = layers
        self.training = true
    }

    public func forward(_ x: Tensor) -> Tensor {
        layers.reduce(x) { $1.forward($0) }
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        layers.reversed().reduce(gradOutput) { $1.backward($0) }
    }

    public var parameters: [(String, Parameter)] {
        layers.enumerated().flatMap { i, l in l.parameters.map { ("\(i).\($0.0)", $0.1) } }
    }

    public var buffers: [(String, Tensor)] {
        layers.enumerated().flatMap { i, l in l.buffers.map { ("\(i).\($0.0)", $0.1) } }
    }
}

/// y = x + block(x), the ResNet block; the block's names are prefixed `conv_block.`
/// as in the CycleGAN generator's `ResnetBlock`.
public final class ResidualBlock: Layer {
    public let block: Sequential
    public let name: String
    public var training: Bool {
        get { block.training }
        set { block.training = newValue }
    }

    public init(_ block: Sequential, name: String = "conv_block") {
        self.block = block
        self.name = name
    }

    public func forward(_ x: Tensor) -> Tensor { Residual.add(x, block.forward(x)) }

    public func backward(_ g: Tensor) -> Tensor { Residual.add(g, block.backward(g)) }

    public var parameters: [(String, Parameter)] { block.parameters.map { ("\(name).\($0.0)", $0.1) } }
    public var buffers: [(String, Tensor)] { block.buffers.map { ("\(name).\($0.0)", $0.1) } }
}

/// Loading and saving the tensors of a layer tree by PyTorch `state_dict` names.
public struct StateDictError: Error, CustomStringConvertible {
    public let description: String
}

extension Layer {
    /// Every parameter and buffer by name.
    public func stateDict() -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (n, p) in parameters { d[n] = p.value }
        for (n, b) in buffers { d[n] = b }
        return d
    }

    /// Sets every parameter (and BatchNorm buffer) from `state`; every name must be
    /// present with the right shape. Extra names are reported unless `strict` is false.
    public func load(_ state: [String: Tensor], prefix: String = "", strict: Bool = true) throws {
        var used = Set<String>()
        for (n, p) in parameters {
            let key = prefix + n
            guard let t = state[key] else { throw StateDictError(description: "missing tensor \(key)") }
            guard t.shape == p.value.shape else {
                throw StateDictError(description: "tensor \(key) has shape \(t.shape), the model needs \(p.value.shape)")
            }
            p.value = t
            used.insert(key)
        }
        try loadBuffers(state, prefix: prefix, used: &used)
        if strict {
            let extra = state.keys.filter { $0.hasPrefix(prefix) && !used.contains($0) && !$0.hasSuffix("num_batches_tracked") }
            if let e = extra.sorted().first {
                throw StateDictError(description: "unexpected tensor \(e) (\(extra.count) unused)")
            }
        }
    }
}

extension Layer {
    fileprivate func loadBuffers(_ state: [String: Tensor], prefix: String, used: inout Set<String>) throws {
        if let bn = self as? BatchNorm2d {
            for (n, shape) in [("running_mean", [bn.channels]), ("running_var", [bn.channels])] {
                let key = prefix + n
                guard let t = state[key], t.shape == shape else { throw StateDictError(description: "missing or malformed \(key)") }
                if n == "running_mean" { bn.runningMean = t } else { bn.runningVar = t }
                used.insert(key)
            }
        } else if let s = self as? Sequential {
            for (i, l) in s.layers.enumerated() { try l.loadBuffers(state, prefix: "\(prefix)\(i).", used: &used) }
        } else if let r = self as? ResidualBlock {
            try r.block.loadBuffers(state, prefix: "\(prefix)\(r.name).", used: &used)
        }
    }
}
