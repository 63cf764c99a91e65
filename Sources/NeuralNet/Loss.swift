import Foundation

/// Losses with mean reduction: each returns the loss and its gradient with respect
/// to the prediction.
public enum Loss {
    /// Mean squared error, `nn.MSELoss()`.
    public static func mse(_ x: Tensor, _ target: Tensor) -> (loss: Float, grad: Tensor) {
        elementwiseMean(x, target) { d in (d * d, 2 * d) }
    }

    /// Mean absolute error, `nn.L1Loss()` (gradient sign(x − t), 0 where equal).
    public static func l1(_ x: Tensor, _ target: Tensor) -> (loss: Float, grad: Tensor) {
        elementwiseMean(x, target) { d in (abs(d), d > 0 ? 1 : (d < 0 ? -1 : 0)) }
    }

    /// mean(f(x − t)) and its gradient, for `term(d) = (f(d), f′(d))`.
    private static func elementwiseMean(_ x: Tensor, _ target: Tensor,
                                        _ term: (Float) -> (value: Float, slope: Float)) -> (loss: Float, grad: Tensor) {
        precondition(x.shape == target.shape)
        var g = Tensor(zeros: x.shape)
        var s: Double = 0
        let n = Float(x.count)
        for i in 0..<x.count {
            let (v, slope) = term(x.data[i] - target.data[i])
            s += Double(v)
            g.data[i] = slope / n
        }
        return (Float(s / Double(x.count)), g)
    }

    /// Cross-entropy of logits (N, C) against class indices, `nn.CrossEntropyLoss()`.
    public static func crossEntropy(_ logits: Tensor, _ target: [Int]) -> (loss: Float, grad: Tensor) {
        let n = logits.shape[0], c = logits.shape[1]
        precondition(target.count == n)
        var g = Tensor(zeros: logits.shape)
        var s: Double = 0
        for i in 0..<n {
            let row = Array(logits.data[(i * c)..<((i + 1) * c)])
            let mx = row.max() ?? 0
            let exps = row.map { exp(Double($0 - mx)) }
            let z = exps.reduce(0, +)
            s += -(Double(row[target[i]] - mx) - log(z))
            for k in 0..<c {
                g.data[i * c + k] = Float(exps[k] / z - (k == target[i] ? 1 : 0)) / Float(n)
            }
        }
        return (Float(s / Double(n)), g)
    }
}
