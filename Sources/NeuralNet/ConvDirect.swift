import CNeuralKernels
import Foundation

// Training convolutions without im2col: the forward pass and the input gradient run the
// inference plans' direct kernel (a sum of shifted products over a padded, phase-split
// input); the weight gradient is a sum of products of the output gradient with the same
// shifted input (gdh_conv_weight_grad). No column matrix is made, which for the small
// configuration's 7×7 layers of few channels was most of a training step: their GEMMs
// have 3 or 8 rows and their columns are 49 times the image.

/// The input of a direct convolution as the kernels read it: padded by `pad` (zeros or
/// reflection) and split into stride × stride phase planes of planeH × pitch.
struct DirectConvGeometry {
    let c, h, w, o, k, stride, pad: Int
    let reflect: Bool
    let ho, wo, planeH, pitch: Int
    /// Offsets of the k·k taps in the prepared input.
    let taps: [Int]

    init(channels c: Int, height h: Int, width w: Int, outChannels o: Int, kernel k: Int, stride: Int, pad: Int, reflect: Bool) {
        self.c = c; self.h = h; self.w = w; self.o = o; self.k = k
        self.stride = stride; self.pad = pad; self.reflect = reflect
        ho = (h + 2 * pad - k) / stride + 1
        wo = (w + 2 * pad - k) / stride + 1
        planeH = (h + 2 * pad + stride - 1) / stride
        pitch = (w + 2 * pad + stride - 1) / stride
        taps = phaseTaps(kernel: k, stride: stride, plane: planeH * pitch, pitch: pitch)
    }

    var cstride: Int { stride * stride * planeH * pitch }
    /// Floats of one prepared image, with the slack the kernels may read past its end.
    var preparedFloats: Int { (c * cstride + pitch * (stride + 2) * 2 + 64 + 15) & ~15 }
    /// Floats of one image's accumulator (output rows `pitch` apart).
    var accFloats: Int { (o * ho * pitch + 64 + 15) & ~15 }

    func prepare(_ img: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>) {
        gdh_conv_prepare(img, Int32(h), Int32(w), Int32(pad), reflect ? 1 : 0, Int32(stride), Int32(k),
                         dst, cstride, Int32(planeH), Int32(pitch), 0, Int32(c))
    }

    /// out (o × ho × wo, compact) = conv(prepared) + bias, through `acc` when the row tiles
    /// cannot write the output themselves.
    func run(_ prepared: UnsafePointer<Float>, _ packed: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
             acc: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, level: Int32) {
        taps.withUnsafeBufferPointer { tp in
            if gdh_conv_direct_rows_fused(prepared, cstride, Int32(c), tp.baseAddress, Int32(taps.count), packed, Int32(o),
                                          out, ho * wo, pitch, Int32(wo), 0, Int32(ho), bias, nil,
                                          Int32(GDH_ACT_NONE), 0, level) != 0 { return }
            runPitched(prepared, packed, acc: acc, level: level)
            gdh_conv_epilogue(acc, ho * pitch, pitch, Int32(ho), Int32(wo), bias, nil, 0, Int32(GDH_ACT_NONE), 0,
                              out, ho * wo, 0, wo, 1, 0, Int32(o))
        }
    }

    /// acc (o × ho rows `pitch` apart, wo valid) = conv(prepared).
    func runPitched(_ prepared: UnsafePointer<Float>, _ packed: UnsafePointer<Float>, acc: UnsafeMutablePointer<Float>, level: Int32) {
        taps.withUnsafeBufferPointer { tp in
            gdh_conv_direct_rows(prepared, cstride, Int32(c), tp.baseAddress, Int32(taps.count), packed, Int32(o),
                                 acc, ho * pitch, pitch, Int32(wo), 0, Int32(ho), level)
        }
    }
}

/// Offsets of the taps (ki, kj) of a k × k kernel in an input split into stride × stride
/// phase planes of `plane` floats, rows `pitch` apart.
func phaseTaps(kernel k: Int, stride s: Int, plane: Int, pitch: Int) -> [Int] {
    (0..<(k * k)).map { t in
        let ki = t / k, kj = t % k
        return ((ki % s) * s + kj % s) * plane + (ki / s) * pitch + kj / s
    }
}

/// Weights (outs, ins, taps) in the direct kernel's blocks of GDH_CONV_OC_BLOCK output
/// channels: [block][in][tap][lane], zeros past the last channel. `transposeFlip` packs
/// the input-gradient convolution instead: outputs and inputs swapped, taps reversed.
/// `scale` multiplies each output channel's weights (a folded BatchNorm; not with transposeFlip).
func packDirectWeights(_ wt: UnsafePointer<Float>, outs: Int, ins: Int, taps kk: Int, transposeFlip: Bool = false,
                       scale: [Float]? = nil) -> [Float] {
    let ob = Int(GDH_CONV_OC_BLOCK)
    let (o, c) = transposeFlip ? (ins, outs) : (outs, ins)
    let blocks = (o + ob - 1) / ob
    var p = [Float](repeating: 0, count: blocks * c * kk * ob)
    for oc in 0..<o {
        let b = oc / ob, lane = oc % ob
        for ic in 0..<c {
            for t in 0..<kk {
                p[((b * c + ic) * kk + t) * ob + lane] = transposeFlip
                    ? wt[(ic * o + oc) * kk + (kk - 1 - t)]
                    : wt[(oc * c + ic) * kk + t] * (scale?[oc] ?? 1)
            }
        }
    }
    return p
}

/// How a training Conv2d computes: the rule of `TrainingConvolution.usesDirect`, or one
/// way for every call (tests run each layer both ways).
public enum ConvAlgorithm: Sendable {
    case automatic, gemm, direct
}

/// Which training convolutions run the direct kernels instead of im2col + GEMM.
public enum TrainingConvolution {
    /// GDH_TRAIN_CONV=gemm or =direct forces one way (for measurements); by default the
    /// rule of `usesDirect`.
    nonisolated(unsafe) public static var mode: String = ProcessInfo.processInfo.environment["GDH_TRAIN_CONV"] ?? "auto"

    /// Direct where the GEMMs are poor: few input or output channels (GEMMs of a handful
    /// of rows, or columns many times the image), or output planes of 16×16 and more
    /// (the backward pass: stride 1 only, where the input gradient is a direct convolution
    /// too). Below that the GEMMs win (measured per layer on the small training step:
    /// `gdh bench train --layers` with GDH_TRAIN_CONV=gemm and =direct). AVX2 or better.
    static func usesDirect(inChannels: Int, outChannels: Int, kernel: Int, stride: Int, outputPlane: Int, backward: Bool) -> Bool {
        guard DirectConvolution.bestKernel >= 1, kernel > 1 else { return false }
        switch mode {
        case "gemm": return false
        case "direct": return true
        default: return min(inChannels, outChannels) <= 8 || (outputPlane >= 256 && (!backward || stride == 1))
        }
    }
}

extension Conv2d {
    func directGeometry(_ x: Tensor) -> DirectConvGeometry {
        DirectConvGeometry(channels: x.c, height: x.h, width: x.w, outChannels: outChannels, kernel: kernelH,
                           stride: stride, pad: padding, reflect: paddingMode == .reflect && padding > 0)
    }

    func usesDirect(_ x: Tensor, backward: Bool) -> Bool {
        guard kernelH == kernelW, algorithm != .gemm else { return false }
        if algorithm == .direct { return true }
        let ho = (x.h + 2 * padding - kernelH) / stride + 1, wo = (x.w + 2 * padding - kernelW) / stride + 1
        return ho > 0 && wo > 0 && TrainingConvolution.usesDirect(inChannels: inChannels, outChannels: outChannels, kernel: kernelH,
                                                                  stride: stride, outputPlane: ho * wo, backward: backward)
    }

    func directForward(_ x: Tensor) -> Tensor {
        let g = directGeometry(x)
        precondition(g.ho > 0 && g.wo > 0, "Conv2d: input \(x.h)x\(x.w) is smaller than the kernel")
        var out = Tensor(uninitialized: [x.n, outChannels, g.ho, g.wo])
        let threads = min(trainingThreads, x.n)
        let per = g.preparedFloats + g.accFloats
        ensureScratch(&scratch, per * threads)
        let packed = weight.value.data.withUnsafeBufferPointer {
            packDirectWeights($0.baseAddress!, outs: outChannels, ins: inChannels, taps: kernelH * kernelW)
        }
        let level = Int32(DirectConvolution.bestKernel)
        let imageSize = x.c * x.h * x.w, outSize = outChannels * g.ho * g.wo
        x.data.withUnsafeBufferPointer { xp in
        packed.withUnsafeBufferPointer { wp in
        (bias?.value.data ?? []).withUnsafeBufferPointer { bp in
        scratch.withUnsafeMutableBufferPointer { sp in
        out.data.withUnsafeMutableBufferPointer { op in
            let xb = xp.baseAddress!, ob = op.baseAddress!, sb = sp.baseAddress!, w = wp.baseAddress!
            let b = bias == nil ? nil : bp.baseAddress
            parallel(threads, threads) { t in
                let prepared = sb + t * per, acc = prepared + g.preparedFloats
                for n in split(x.n, threads, t) {
                    g.prepare(xb + n * imageSize, into: prepared)
                    g.run(prepared, w, bias: b, acc: acc, out: ob + n * outSize, level: level)
                }
            }
        }}}}}
        return out
    }

    /// dW (added into weight.grad) by the direct weight-gradient kernel; dx by the direct
    /// kernel on the zero-padded gradient (stride 1), or Wᵀ·g and col2im (other strides).
    func directBackward(_ gradOutput: Tensor) -> Tensor {
        let x = input
        let g = directGeometry(x)
        precondition(gradOutput.shape == [x.n, outChannels, g.ho, g.wo], "Conv2d.backward: bad gradient shape")
        let kk = kernelH * kernelW, imageSize = x.c * x.h * x.w, outSize = outChannels * g.ho * g.wo
        let threads = min(trainingThreads, x.n)
        let level = Int32(DirectConvolution.bestKernel)
        // The input gradient of a stride-1 convolution is a convolution of the gradient,
        // padded by k − 1 with zeros, by the transposed and flipped weights; its output is
        // the gradient of the padded input, folded back by gdh_unpad_planes.
        let dxGeometry = stride == 1
            ? DirectConvGeometry(channels: outChannels, height: g.ho, width: g.wo, outChannels: inChannels, kernel: kernelH,
                                 stride: 1, pad: kernelH - 1, reflect: false)
            : nil
        let dwFloats = (outChannels * inChannels * kk + 15) & ~15
        let dxFloats = dxGeometry.map { $0.preparedFloats + $0.accFloats } ?? 0
        let per = g.preparedFloats + dwFloats + dxFloats
        ensureScratch(&scratch, per * threads)
        let packedT = stride == 1 ? weight.value.data.withUnsafeBufferPointer {
            packDirectWeights($0.baseAddress!, outs: outChannels, ins: inChannels, taps: kk, transposeFlip: true)
        } : []
        var dx = Tensor(uninitialized: x.shape)
        x.data.withUnsafeBufferPointer { xp in
        gradOutput.data.withUnsafeBufferPointer { gp in
        packedT.withUnsafeBufferPointer { wtp in
        scratch.withUnsafeMutableBufferPointer { sp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
        g.taps.withUnsafeBufferPointer { tp in
            let xb = xp.baseAddress!, gb = gp.baseAddress!, sb = sp.baseAddress!, dxb = dxp.baseAddress!
            parallel(threads, threads) { t in
                let prepared = sb + t * per, dw = prepared + g.preparedFloats, dxScratch = dw + dwFloats
                dw.update(repeating: 0, count: outChannels * inChannels * kk)
                for n in split(x.n, threads, t) {
                    g.prepare(xb + n * imageSize, into: prepared)
                    gdh_conv_weight_grad(prepared, g.cstride, Int32(g.c), tp.baseAddress, Int32(kk), gb + n * outSize,
                                         g.ho * g.wo, Int32(outChannels), Int32(g.ho), Int32(g.wo), g.pitch, dw,
                                         0, Int32(g.c), level)
                    if let d = dxGeometry {
                        // The padded-input gradient: (h + 2·pad) × (w + 2·pad) valid of d's output.
                        let paddedGrad = dxScratch + d.preparedFloats
                        d.prepare(gb + n * outSize, into: dxScratch)
                        d.runPitched(dxScratch, wtp.baseAddress!, acc: paddedGrad, level: level)
                        gdh_unpad_planes(paddedGrad, d.ho * d.pitch, d.pitch, Int32(x.h), Int32(x.w), Int32(padding),
                                         g.reflect ? 1 : 0, dxb + n * imageSize, 0, Int32(inChannels))
                    }
                }
            }
            // The threads' weight gradients, added in thread order (the same sums for a thread count).
            weight.grad.data.withUnsafeMutableBufferPointer { dwp in
                for t in 0..<threads {
                    let part = UnsafePointer(sb + t * per + g.preparedFloats)
                    for i in 0..<(outChannels * inChannels * kk) { dwp[i] += part[i] }
                }
            }
        }}}}}}
        if stride != 1 { stridedInputGradient(gradOutput, into: &dx) }
        if let b = bias { addChannelSums(gradOutput, into: b) }
        return dx
    }

    /// dx = col2im(Wᵀ · g), for the strided convolutions.
    private func stridedInputGradient(_ gradOutput: Tensor, into dx: inout Tensor) {
        let x = input
        let pg = PatchGeometry(channels: x.c, height: x.h, width: x.w, kh: kernelH, kw: kernelW, stride: stride,
                               padding: padding, gridH: gradOutput.h, gridW: gradOutput.w,
                               reflect: paddingMode == .reflect && padding > 0)
        dx.data.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        gradOutput.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            transposedConvolution(pg, samples: x.n, channels: outChannels, gp.baseAddress!, weights: wp.baseAddress!,
                                  into: dxp.baseAddress!, scratch: &scratch)
        }}}
    }
}
