import Testing
import CHammingKernels
@testable import HammingCode

@Suite("HammingCode")
struct HammingCodeTests {
    @Test("widths 32...1024 in steps of 32 are accepted, others refused")
    func widths() throws {
        for b in stride(from: 32, through: 1024, by: 32) { #expect(try CodeWidth(bits: b).bits == b) }
        for b in [0, 16, 31, 33, 48, 1056, -32] { #expect(throws: CodeError.self) { try CodeWidth(bits: b) } }
    }

    @Test("hex round-trips, lower case, MSB first", arguments: [32, 64, 96, 128, 256, 1024])
    func hexRoundTrip(bits: Int) throws {
        let w = try CodeWidth(bits: bits)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let c = HammingCode(width: w, words: (0..<w.words).map { _ in rng.next() })
            #expect(c.hex.count == bits / 4)
            #expect(c.hex == c.hex.lowercased())
            #expect(try HammingCode(hex: c.hex, width: w) == c)
            #expect(try HammingCode(hex: c.hex.uppercased(), width: w) == c)
            #expect(try HammingCode(bytes: c.bytes, width: w) == c)
        }
        let one = try HammingCode(hex: "8" + String(repeating: "0", count: bits / 4 - 1), width: w)
        #expect(one.bit(0) && !one.bit(1))
        #expect(one.bytes[0] == 0x80)
    }

    @Test("codes held in place (up to 256 bits) and in an array (wider) behave alike", arguments: [32, 64, 96, 128, 160, 192, 224, 256, 288, 512, 1024])
    func storage(bits: Int) throws {
        let w = try CodeWidth(bits: bits)
        var rng = SplitMix64(seed: UInt64(bits))
        for _ in 0..<20 {
            let raw = (0..<w.words).map { _ in rng.next() }
            let c = HammingCode(width: w, words: raw)
            // Padding bits are cleared whichever way the code is made.
            var padded = raw
            if bits % 64 != 0 { padded[padded.count - 1] &= ~UInt64(0) << 32 }
            #expect(c.words == padded)
            #expect(c.withWords { Array($0) } == padded)
            // Packed bytes: most significant first, `bits / 8` of them.
            let packed: [UInt8] = (0..<w.bytes).map { (i: Int) -> UInt8 in
                UInt8(truncatingIfNeeded: padded[i >> 3] >> UInt64(56 - 8 * (i & 7)))
            }
            #expect(c.bytes == packed)
            let copied = raw.withUnsafeBufferPointer { HammingCode(width: w, copying: $0.baseAddress!) }
            let parsed = try HammingCode(hex: c.hex, width: w)
            let fromBytes = try HammingCode(bytes: c.bytes, width: w)
            for other in [copied, parsed, fromBytes] {
                #expect(other == c)
                #expect(other.hashValue == c.hashValue)
                #expect(other.distance(to: c) == 0)
            }
            let i = Int(rng.next() % UInt64(bits))
            let flipped = c.flipping(i)
            #expect(flipped != c && flipped.distance(to: c) == 1 && flipped.bit(i) != c.bit(i))
            #expect(flipped.flipping(i) == c)
            #expect(Set([c, parsed, flipped]).count == 2)
        }
        #expect(HammingCode(zeroOf: w).words == [UInt64](repeating: 0, count: w.words))
    }

    @Test("bad hex is refused with its reason")
    func badHex() throws {
        let w = try CodeWidth(bits: 32)
        #expect(throws: CodeError.badLength(expected: 8, got: 7)) { try HammingCode(hex: "0123456", width: w) }
        #expect(throws: CodeError.badLength(expected: 8, got: 9)) { try HammingCode(hex: "012345678", width: w) }
        #expect(throws: CodeError.badDigit(position: 3)) { try HammingCode(hex: "012g4567", width: w) }
        #expect(throws: CodeError.self) { try HammingCode(hex: "0123456 ", width: w) }
    }

    @Test("every byte at every position of a 96-bit code: hex digits decode to their bits, any other byte is refused at its offset")
    func everyByte() throws {
        let w = try CodeWidth(bits: 96)
        let base = Array("0123456789abcdefFEDCBA98".utf8)
        let reference = try HammingCode(hex: String(decoding: base, as: UTF8.self), width: w)
        #expect(reference.words == [0x0123_4567_89ab_cdef, 0xfedc_ba98_0000_0000])
        for position in 0..<base.count {
            for byte in 0...255 {
                var digits = base
                digits[position] = UInt8(byte)
                let value: UInt64? = switch UInt8(byte) {
                case 0x30...0x39: UInt64(byte - 0x30)
                case 0x41...0x46: UInt64(byte - 0x41 + 10)
                case 0x61...0x66: UInt64(byte - 0x61 + 10)
                default: nil
                }
                if let value {
                    var words = reference.words
                    let shift = UInt64(60 - (position * 4) % 64)
                    words[position / 16] = words[position / 16] & ~(0xF << shift) | value << shift
                    #expect(try HammingCode(hexUTF8: digits, width: w).words == words)
                } else {
                    #expect(throws: CodeError.badDigit(position: position)) { try HammingCode(hexUTF8: digits, width: w) }
                }
            }
        }
        // The first bad digit is the one reported.
        #expect(throws: CodeError.badDigit(position: 2)) { try HammingCode(hex: "01x3456789abcdefFEDCBA9z", width: w) }
    }

    @Test("distance is the popcount of the xor, padding never counts")
    func distance() throws {
        for bits in [32, 64, 96, 160, 1024] {
            let w = try CodeWidth(bits: bits)
            let z = HammingCode(zeroOf: w)
            var c = z
            for i in stride(from: 0, to: bits, by: 3) { c = c.flipping(i) }
            #expect(z.distance(to: c) == (bits + 2) / 3)
            let ones = try HammingCode(hex: String(repeating: "f", count: bits / 4), width: w)
            #expect(ones.distance(to: z) == bits)
        }
    }

    @Test("substrings split b bits into m runs differing by at most one bit")
    func substrings() throws {
        let w = try CodeWidth(bits: 64)
        let l = try SubstringLayout(width: w, count: 3)
        #expect(l.sizes == [22, 21, 21])
        #expect(l.offsets == [0, 22, 43])
        let c = try HammingCode(hex: "fedcba9876543210", width: w)
        let v = l.substrings(of: c)
        // Reassembling the substrings gives the code back.
        let whole = (UInt64(v[0]) << 42) | (UInt64(v[1]) << 21) | UInt64(v[2])
        #expect(whole == 0xfedc_ba98_7654_3210)
        // Across a word boundary (96 bits, m = 5: sizes 20,19,19,19,19).
        let w96 = try CodeWidth(bits: 96)
        let l96 = try SubstringLayout(width: w96, count: 5)
        let c96 = try HammingCode(hex: "0123456789abcdef01234567", width: w96)
        var bits = ""
        for (j, s) in l96.substrings(of: c96).enumerated() {
            let b = String(s, radix: 2)
            bits += String(repeating: "0", count: l96.sizes[j] - b.count) + b
        }
        #expect(bits == (0..<96).map { c96.bit($0) ? "1" : "0" }.joined())
        #expect(throws: SubstringLayout.LayoutError.self) { try SubstringLayout(width: w, count: 2) }
        #expect(throws: SubstringLayout.LayoutError.self) { try SubstringLayout(width: w, count: 65) }
    }

    @Test("vectorised and scalar scan kernels agree", arguments: [1, 2, 3, 4, 16])
    func kernelsAgree(words: Int) {
        var rng = SystemRandomNumberGenerator()
        let n = 1000 + Int.random(in: 0..<17)
        var codes = (0..<(n * words)).map { _ in rng.next() }
        for i in stride(from: 0, to: n, by: 7) { for w in 0..<words { codes[i * words + w] = codes[w] } }
        let q = Array(codes[0..<words])
        for thr in [0, 1, 20, 32 * words, 64 * words] {
            var i1 = [UInt32](repeating: 0, count: n), d1 = [UInt16](repeating: 0, count: n)
            var i2 = i1, d2 = d1
            let a = gdh_scan_leq(codes, words, n, q, UInt32(thr), &i1, &d1)
            let b = gdh_scan_leq_reference(codes, words, n, q, UInt32(thr), &i2, &d2)
            #expect(a == b)
            #expect(Array(i1[0..<a]) == Array(i2[0..<b]))
            #expect(Array(d1[0..<a]) == Array(d2[0..<b]))
        }
    }
}

@Suite("ScanKernel")
struct ScanKernelTests {
    @Test("names the kernel CHammingKernels runs (STATS' scan_kernel)")
    func name() {
        #expect(ScanKernel.name == (gdh_kernels_vectorised() == 1 ? "avx512" : "popcnt"))
        #expect(["avx512", "popcnt"].contains(ScanKernel.name))
    }
}
