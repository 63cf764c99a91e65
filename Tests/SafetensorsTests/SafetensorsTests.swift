import Foundation
import HammingCode
import Testing
@testable import Safetensors

// MARK: - Helpers

/// Directory of this file's fixtures.
private let fixturesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

/// A raw safetensors file: 8-byte little-endian length, `header` verbatim, then `data`.
private func rawFile(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let headerBytes = Array(header.utf8)
    let length = declaredLength ?? UInt64(headerBytes.count)
    var out = (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) }
    out += headerBytes
    out += data
    return out
}

/// Asserts that decoding `bytes` fails with `kind`; returns the error for further checks.
@discardableResult
private func expectDecodeError(
    _ kind: SafetensorsError.Kind, _ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation
) -> SafetensorsError? {
    do {
        let file = try SafetensorsFile.decode(bytes)
        Issue.record("expected \(kind), decoded \(file.names)", sourceLocation: sourceLocation)
        return nil
    } catch let error as SafetensorsError {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Deterministic pseudo-random bytes (SplitMix64).
private func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

private func headerText(of encoded: [UInt8]) -> String {
    let length = Int(encoded[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    return String(decoding: encoded[8..<(8 + length)], as: UTF8.self)
}

// MARK: - Round trips

@Suite("Safetensors: round trips")
struct RoundTripTests {
    @Test("every dtype round-trips bit-exactly", arguments: DType.allCases)
    func everyDType(dtype: DType) throws {
        var tensors: [String: TensorData] = [:]
        for (i, shape) in [[2, 3], [5], [], [0, 4], [1, 2, 3, 2]].enumerated() {
            let count = shape.reduce(1, *) * dtype.byteSize
            tensors["t\(i)"] = try TensorData(
                dtype: dtype, shape: shape, bytes: pseudoRandomBytes(count, seed: UInt64(i + 1)))
        }
        let file = SafetensorsFile(tensors: tensors, metadata: ["dtype": dtype.rawValue])
        let encoded = file.encode()
        let decoded = try SafetensorsFile.decode(encoded)
        #expect(decoded == file)
        #expect(decoded.encode() == encoded)
    }

    @Test("all dtypes in one file, with metadata")
    func mixed() throws {
        var tensors: [String: TensorData] = [:]
        for (i, dtype) in DType.allCases.enumerated() {
            tensors["tensor.\(dtype.rawValue)"] = try TensorData(
                dtype: dtype, shape: [3, i + 1], bytes: pseudoRandomBytes(3 * (i + 1) * dtype.byteSize, seed: 99 + UInt64(i)))
        }
        let file = SafetensorsFile(tensors: tensors, metadata: ["layer": "conv2d", "stride": "2"])
        #expect(try SafetensorsFile.decode(file.encode()) == file)
    }

    @Test("NaN payloads and signed zeros survive")
    func nanPayloads() throws {
        let floats: [Float] = [Float(nan: 0x1234, signaling: false), -Float.nan, -0.0, .infinity, .leastNonzeroMagnitude]
        let tensor = try TensorData(floats: floats, shape: [5])
        let decoded = try SafetensorsFile.decode(SafetensorsFile(tensors: ["x": tensor]).encode())
        #expect(decoded["x"] == tensor)
        let back = try decoded["x"]!.floats()
        #expect(back.map(\.bitPattern) == floats.map(\.bitPattern))
    }

    @Test("metadata and names with characters that need escaping")
    func escaping() throws {
        let odd = "quote\" backslash\\ newline\n tab\t ctrl\u{01} unicode é 漢字 🙂 slash/"
        let file = SafetensorsFile(
            tensors: [odd: try TensorData(floats: [1, 2], shape: [2])],
            metadata: [odd: odd, "": "empty key", "empty value": ""])
        #expect(try SafetensorsFile.decode(file.encode()) == file)
    }

    @Test("empty file round-trips")
    func emptyFile() throws {
        let file = SafetensorsFile()
        let encoded = file.encode()
        #expect(try SafetensorsFile.decode(encoded) == file)
        #expect(headerText(of: encoded).trimmingCharacters(in: .whitespaces) == "{}")
    }

    @Test("encoding is deterministic: sorted names, contiguous data, header padded to 8")
    func layout() throws {
        let file = SafetensorsFile(
            tensors: [
                "b": try TensorData(floats: [1, 2, 3], shape: [3]),
                "a": try TensorData(dtype: .u8, shape: [1], bytes: [7]),
                "c": try TensorData(dtype: .i16, shape: [2], bytes: [1, 0, 2, 0]),
            ],
            metadata: ["z": "1", "y": "2"])
        let encoded = file.encode()
        let header = headerText(of: encoded)
        #expect((8 + header.utf8.count) % 8 == 0)
        #expect(header.trimmingCharacters(in: .whitespaces) == #"{"__metadata__":{"y":"2","z":"1"},"#
            + #""a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"#
            + #""b":{"dtype":"F32","shape":[3],"data_offsets":[1,13]},"#
            + #""c":{"dtype":"I16","shape":[2],"data_offsets":[13,17]}}"#)
        #expect(Array(encoded.suffix(17)) == [7] + file["b"]!.bytes + [1, 0, 2, 0])
        #expect(file.names == ["a", "b", "c"])
        // Insertion order does not matter.
        var other = SafetensorsFile(metadata: ["y": "2", "z": "1"])
        other["c"] = file["c"]
        other["a"] = file["a"]
        other["b"] = file["b"]
        #expect(other.encode() == encoded)
    }

    @Test("write(to:) then read(contentsOf:), leaving no temporary file")
    func fileIO() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("safetensors-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("x.safetensors").path
        let file = SafetensorsFile(
            tensors: ["w": try TensorData(floats: [0.5, -0.25], shape: [1, 2])], metadata: ["k": "v"])
        try file.write(to: path)
        try file.write(to: path)  // overwriting works
        #expect(try SafetensorsFile.read(contentsOf: path) == file)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["x.safetensors"])
    }

    @Test("read(contentsOf:) of a missing file throws an io error")
    func missingFile() {
        #expect(throws: SafetensorsError.self) {
            try SafetensorsFile.read(contentsOf: "/nonexistent/dir/none.safetensors")
        }
        do {
            _ = try SafetensorsFile.read(contentsOf: "/nonexistent/dir/none.safetensors")
        } catch let error as SafetensorsError {
            #expect(error.kind == .io)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

// MARK: - Conversions

@Suite("Safetensors: value conversions")
struct ConversionTests {
    /// Independent reference for binary16 → Float via Double arithmetic.
    static func referenceHalf(_ bits: UInt16) -> Float {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10) & 0x1F
        let mantissa = Double(bits & 0x3FF)
        switch exponent {
        case 0: return Float(sign * mantissa * pow(2.0, -24))
        case 31: return mantissa == 0 ? Float(sign * .infinity) : .nan
        default: return Float(sign * (1 + mantissa / 1024) * pow(2.0, Double(exponent - 15)))
        }
    }

    @Test("F16 → Float is exact for all 65536 bit patterns")
    func halfExhaustive() throws {
        let patterns = (0...UInt16.max).map { $0 }
        let bytes = patterns.flatMap { [UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)] }
        let floats = try TensorData(dtype: .f16, shape: [patterns.count], bytes: bytes).floats()
        var mismatches = 0
        for (bits, value) in zip(patterns, floats) {
            let expected = Self.referenceHalf(bits)
            if expected.isNaN {
                if !value.isNaN { mismatches += 1 }
                // The payload is kept: the 10 mantissa bits move to the top of Float's 23.
                if (value.bitPattern >> 13) & 0x3FF != UInt32(bits & 0x3FF) { mismatches += 1 }
            } else if value.bitPattern != expected.bitPattern {
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
        #expect(floats[0x3C00] == 1)
        #expect(floats[0x7BFF] == 65504)
        #expect(floats[0x0001] == Float(sign: .plus, exponent: -24, significand: 1))
        #expect(floats[0x8000].bitPattern == (-0.0 as Float).bitPattern)
        #expect(floats[0xFC00] == -.infinity)
    }

    @Test("BF16 → Float is exact for all 65536 bit patterns")
    func bfloat16Exhaustive() throws {
        let patterns = (0...UInt16.max).map { $0 }
        let bytes = patterns.flatMap { [UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)] }
        let floats = try TensorData(dtype: .bf16, shape: [patterns.count], bytes: bytes).floats()
        #expect(zip(patterns, floats).allSatisfy { $1.bitPattern == UInt32($0) << 16 })
        #expect(floats[0x3F80] == 1)
        #expect(floats[0xC020] == -2.5)
    }

    @Test("F32 and F64 → Float")
    func wideFloats() throws {
        let values: [Float] = [0, 1, -2.5, .pi, .greatestFiniteMagnitude, .leastNonzeroMagnitude]
        #expect(try TensorData(floats: values, shape: [2, 3]).floats() == values)

        let doubles: [Double] = [0.1, -3, 1e300, 0.5]
        let bytes = doubles.flatMap { d in (0..<8).map { UInt8(truncatingIfNeeded: d.bitPattern >> (8 * UInt64($0))) } }
        #expect(try TensorData(dtype: .f64, shape: [4], bytes: bytes).floats() == [0.1, -3, .infinity, 0.5])
    }

    @Test("integer dtypes → Int64")
    func integers() throws {
        #expect(try TensorData(int64s: [.min, -1, 0, .max], shape: [2, 2]).int64s() == [.min, -1, 0, .max])
        #expect(try TensorData(dtype: .i32, shape: [2], bytes: [0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0x80]).int64s()
            == [-1, Int64(Int32.min) + 1])
        #expect(try TensorData(dtype: .i16, shape: [2], bytes: [0xFE, 0xFF, 0x34, 0x12]).int64s() == [-2, 0x1234])
        #expect(try TensorData(dtype: .i8, shape: [3], bytes: [0x80, 0x7F, 0xFF]).int64s() == [-128, 127, -1])
        #expect(try TensorData(dtype: .u8, shape: [2], bytes: [0x80, 0xFF]).int64s() == [128, 255])
        #expect(try TensorData(dtype: .bool, shape: [3], bytes: [0, 1, 2]).int64s() == [0, 1, 1])
    }

    @Test("conversions not defined for the dtype throw")
    func unsupported() throws {
        #expect(throws: SafetensorsError(.unsupportedConversion, "floats() is not defined for I64")) {
            try TensorData(int64s: [1], shape: [1]).floats()
        }
        for dtype in [DType.i32, .i16, .i8, .u8, .bool] {
            #expect(throws: SafetensorsError.self) {
                try TensorData(dtype: dtype, shape: [1], bytes: [UInt8](repeating: 0, count: dtype.byteSize)).floats()
            }
        }
        for dtype in [DType.f32, .f16, .bf16, .f64] {
            #expect(throws: SafetensorsError.self) {
                try TensorData(dtype: dtype, shape: [1], bytes: [UInt8](repeating: 0, count: dtype.byteSize)).int64s()
            }
        }
    }

    @Test("TensorData initialisers check sizes and shapes")
    func initChecks() {
        #expect(throws: SafetensorsError.self) { try TensorData(dtype: .f32, shape: [2, 2], bytes: [0, 0, 0, 0]) }
        #expect(throws: SafetensorsError.self) { try TensorData(dtype: .u8, shape: [-1], bytes: []) }
        #expect(throws: SafetensorsError.self) { try TensorData(dtype: .u8, shape: [Int.max, 2], bytes: []) }
        #expect(throws: SafetensorsError.self) { try TensorData(dtype: .f64, shape: [Int.max / 4], bytes: []) }
        #expect(throws: SafetensorsError.self) { try TensorData(floats: [1, 2, 3], shape: [2]) }
        #expect(throws: SafetensorsError.self) { try TensorData(int64s: [1], shape: [2]) }
        #expect(throws: Never.self) { try TensorData(dtype: .u8, shape: [], bytes: [1]) }
        #expect(throws: Never.self) { try TensorData(dtype: .u8, shape: [0, Int.max], bytes: []) }
        #expect(DType.allCases.map(\.byteSize) == [4, 2, 2, 8, 8, 4, 2, 1, 1, 1])
    }
}

// MARK: - A file written by Python

/// `Fixtures/python_written.safetensors` was written with Python safetensors 0.8.0 and
/// torch 2.13.0+cpu by:
///
///     import torch
///     from safetensors.torch import save_file
///     t = {
///         "f32": torch.tensor([[0.1, -1.5], [3.4028234663852886e38, 1.401298464324817e-45]], dtype=torch.float32),
///         "f16": torch.tensor([1.0, -2.5, 0.0999755859375, 65504.0, 2.0**-24, 2.0**-14, -0.0, float("inf")],
///                             dtype=torch.float16),
///         "bf16": torch.tensor([[1.0, -2.5, 3.140625], [-0.0078125, 2.0**-133, float("-inf")]], dtype=torch.bfloat16),
///         "i64": torch.tensor([-(2**63), 0, 42, 2**53 + 1], dtype=torch.int64),
///         "scalar": torch.tensor(7.25, dtype=torch.float32),
///         "empty": torch.zeros((0, 3), dtype=torch.float32),
///     }
///     save_file(t, "python_written.safetensors",
///               metadata={"format": "pt", "note": "written by python safetensors"})
@Suite("Safetensors: file written by Python")
struct PythonFixtureTests {
    static let path = fixturesDirectory.appendingPathComponent("python_written.safetensors").path

    @Test("reads tensors, shapes, values and metadata")
    func readsPythonFile() throws {
        let file = try SafetensorsFile.read(contentsOf: Self.path)
        #expect(file.metadata == ["format": "pt", "note": "written by python safetensors"])
        #expect(file.names == ["bf16", "empty", "f16", "f32", "i64", "scalar"])

        let f32 = try #require(file["f32"])
        #expect(f32.dtype == .f32 && f32.shape == [2, 2])
        #expect(try f32.floats() == [0.1, -1.5, .greatestFiniteMagnitude, .leastNonzeroMagnitude])

        let f16 = try #require(file["f16"])
        #expect(f16.dtype == .f16 && f16.shape == [8])
        let halves = try f16.floats()
        #expect(Array(halves.prefix(6)) == [1, -2.5, 0.0999755859375, 65504, 0x1p-24, 0x1p-14])
        #expect(halves[6] == 0 && halves[6].sign == .minus)
        #expect(halves[7] == .infinity)

        let bf16 = try #require(file["bf16"])
        #expect(bf16.dtype == .bf16 && bf16.shape == [2, 3])
        #expect(try bf16.floats() == [1, -2.5, 3.140625, -0.0078125, 0x1p-133, -.infinity])

        let i64 = try #require(file["i64"])
        #expect(i64.dtype == .i64 && i64.shape == [4])
        #expect(try i64.int64s() == [.min, 0, 42, 9_007_199_254_740_993])

        let scalar = try #require(file["scalar"])
        #expect(scalar.shape == [])
        #expect(try scalar.floats() == [7.25])

        let empty = try #require(file["empty"])
        #expect(empty.shape == [0, 3] && empty.bytes.isEmpty)
    }

    @Test("re-encoding the Python file keeps every tensor")
    func reencode() throws {
        let original = try SafetensorsFile.read(contentsOf: Self.path)
        let reencoded = original.encode()
        #expect(try SafetensorsFile.decode(reencoded) == original)
        #expect(try SafetensorsFile.decode(reencoded).encode() == reencoded)
    }

    @Test("every truncation of the Python file throws")
    func truncations() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.path)))
        for length in 0..<bytes.count {
            #expect(throws: SafetensorsError.self) { try SafetensorsFile.decode(Array(bytes.prefix(length))) }
        }
    }
}

// MARK: - Malformed input

@Suite("Safetensors: malformed input")
struct MalformedInputTests {
    let entry = #"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#
    let eightBytes = [UInt8](repeating: 0, count: 8)

    @Test("a well-formed hand-written file decodes (baseline for the cases below)")
    func baseline() throws {
        let file = try SafetensorsFile.decode(rawFile(header: #"{"x":\#(entry)}   "#, data: eightBytes))
        #expect(try file["x"] == TensorData(floats: [0, 0], shape: [2]))
        // Trailing bytes after the last tensor are tolerated.
        #expect(try SafetensorsFile.decode(rawFile(header: #"{"x":\#(entry)}"#, data: eightBytes + [1, 2])).names == ["x"])
    }

    @Test("fewer than 8 bytes")
    func tooShort() {
        expectDecodeError(.truncated, [])
        expectDecodeError(.truncated, [2, 0, 0, 0, 0, 0, 0])
    }

    @Test("header length larger than the file")
    func truncatedHeader() {
        let bytes = rawFile(header: #"{"x":\#(entry)}"#, data: eightBytes)
        expectDecodeError(.headerTooLarge, rawFile(header: "{}", declaredLength: 3))
        expectDecodeError(.headerTooLarge, Array(bytes.prefix(20)))
    }

    @Test("header length over 100 MB or absurd")
    func headerTooLarge() {
        expectDecodeError(.headerTooLarge, rawFile(header: "{}", declaredLength: 100_000_001))
        expectDecodeError(.headerTooLarge, rawFile(header: "{}", declaredLength: UInt64.max))
        expectDecodeError(.headerTooLarge, rawFile(header: "{}", declaredLength: 1 << 63))
    }

    @Test("header that is not JSON, not UTF-8, or not an object")
    func badJSON() {
        expectDecodeError(.invalidJSON, rawFile(header: ""))
        expectDecodeError(.invalidJSON, rawFile(header: "{"))
        expectDecodeError(.invalidJSON, rawFile(header: #"{"x": }"#))
        expectDecodeError(.invalidJSON, rawFile(header: "not json"))
        expectDecodeError(.invalidJSON, rawFile(header: "[1, 2]"))
        expectDecodeError(.invalidJSON, rawFile(header: "42"))
        var invalidUTF8 = rawFile(header: #"{"x":"#)
        invalidUTF8 += [0xFF, 0xFE]
        invalidUTF8[0] = UInt8(invalidUTF8.count - 8)
        expectDecodeError(.invalidJSON, invalidUTF8)
    }

    @Test("offsets outside the data section")
    func offsetsOutOfRange() {
        expectDecodeError(.offsetsOutOfRange, rawFile(header: #"{"x":\#(entry)}"#, data: [0, 0, 0, 0]))
        expectDecodeError(
            .offsetsOutOfRange,
            rawFile(header: #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: eightBytes))
        expectDecodeError(
            .offsetsOutOfRange,
            rawFile(header: #"{"x":{"dtype":"F32","shape":[0],"data_offsets":[9,9]}}"#, data: eightBytes))
        expectDecodeError(
            .offsetsOutOfRange,
            rawFile(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, data: eightBytes))
        expectDecodeError(
            .offsetsOutOfRange,
            rawFile(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, data: eightBytes))
        expectDecodeError(
            .offsetsOutOfRange,
            rawFile(
                header: #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0]}}"#, data: eightBytes))
        expectDecodeError(
            .offsetsOutOfRange,
            rawFile(header: #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0.5,1.5]}}"#, data: eightBytes))
        expectDecodeError(
            .offsetsOutOfRange,
            rawFile(header: #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[false,true]}}"#, data: eightBytes))
    }

    @Test("overlapping tensors")
    func overlapping() throws {
        let data = [UInt8](repeating: 0, count: 16)
        expectDecodeError(.overlappingTensors, rawFile(
            header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
                + #""b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            data: data))
        expectDecodeError(.overlappingTensors, rawFile(
            header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"#
                + #""b":{"dtype":"U8","shape":[1],"data_offsets":[7,8]}}"#,
            data: data))
        expectDecodeError(.overlappingTensors, rawFile(
            header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
                + #""b":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            data: data))
        // Adjacent tensors, gaps and empty tensors are fine.
        let ok = try SafetensorsFile.decode(rawFile(
            header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"#
                + #""b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"#
                + #""c":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},"#
                + #""e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#,
            data: data))
        #expect(ok.names == ["a", "b", "c", "e"])
    }

    @Test("byte range does not match shape × dtype size")
    func wrongSize() {
        expectDecodeError(
            .sizeMismatch,
            rawFile(header: #"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: eightBytes))
        expectDecodeError(
            .sizeMismatch,
            rawFile(header: #"{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}}"#, data: eightBytes))
        expectDecodeError(
            .sizeMismatch,
            rawFile(header: #"{"x":{"dtype":"U8","shape":[],"data_offsets":[0,0]}}"#, data: eightBytes))
    }

    @Test("invalid shapes: negative, overflowing, non-integer")
    func invalidShapes() {
        expectDecodeError(
            .invalidShape,
            rawFile(header: #"{"x":{"dtype":"U8","shape":[-2,-4],"data_offsets":[0,8]}}"#, data: eightBytes))
        expectDecodeError(
            .invalidShape,
            rawFile(
                header: #"{"x":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
                data: eightBytes))
        expectDecodeError(
            .invalidShape,
            rawFile(header: #"{"x":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}"#,
                    data: eightBytes))
        expectDecodeError(
            .invalidShape,
            rawFile(header: #"{"x":{"dtype":"U8","shape":[8.0],"data_offsets":[0,8]}}"#, data: eightBytes))
        expectDecodeError(
            .invalidShape,
            rawFile(header: #"{"x":{"dtype":"U8","shape":["8"],"data_offsets":[0,8]}}"#, data: eightBytes))
        expectDecodeError(
            .invalidShape,
            rawFile(header: #"{"x":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}"#, data: eightBytes))
    }

    @Test("unknown dtype is reported by name")
    func unknownDType() {
        let error = expectDecodeError(
            .unknownDType,
            rawFile(header: #"{"x":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#, data: eightBytes))
        #expect(error?.description.contains("F8_E4M3") == true)
        expectDecodeError(
            .unknownDType,
            rawFile(header: #"{"x":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}"#, data: eightBytes))
    }

    @Test("missing or mistyped fields")
    func missingFields() {
        for header in [
            #"{"x":[1,2]}"#,
            #"{"x":{"shape":[2],"data_offsets":[0,8]}}"#,
            #"{"x":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}"#,
            #"{"x":{"dtype":"F32","data_offsets":[0,8]}}"#,
            #"{"x":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}"#,
            #"{"x":{"dtype":"F32","shape":[2]}}"#,
            #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}"#,
            #"{"__metadata__":[]}"#,
            #"{"__metadata__":{"a":1}}"#,
            #"{"__metadata__":{"a":null}}"#,
        ] {
            expectDecodeError(.invalidHeader, rawFile(header: header, data: eightBytes))
        }
    }
}
