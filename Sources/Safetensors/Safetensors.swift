// Reading and writing the safetensors format (https://github.com/huggingface/safetensors).
//
// Layout of a file:
//
//     [8 bytes]  N, the header length, a little-endian UInt64
//     [N bytes]  UTF-8 JSON object, possibly padded at the end with spaces:
//                  { "__metadata__": { "key": "value", ... },          (optional)
//                    "<tensor name>": { "dtype": "F32",
//                                       "shape": [2, 3],
//                                       "data_offsets": [begin, end] }, ... }
//     [rest]     the data section; offsets are relative to its start.
//
// Tensor data are raw little-endian values in row-major order.
//
// Files are treated as untrusted input: every length, offset and shape is checked
// before use, and anything malformed is reported as a `SafetensorsError`.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Errors

/// Everything that can go wrong while reading, decoding, converting or writing.
public struct SafetensorsError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Equatable, Sendable {
        /// The file could not be read or written.
        case io
        /// Fewer bytes than the 8-byte length prefix or the declared header.
        case truncated
        /// The declared header length exceeds the limit (100 MB) or the file.
        case headerTooLarge
        /// The header is not UTF-8 JSON, or not a JSON object.
        case invalidJSON
        /// The JSON is well formed but a field is missing or has the wrong type.
        case invalidHeader
        /// A `dtype` this library does not know.
        case unknownDType
        /// A shape with a negative dimension, or whose element count overflows.
        case invalidShape
        /// The byte count does not match the shape and dtype.
        case sizeMismatch
        /// `data_offsets` outside the data section, or with begin > end.
        case offsetsOutOfRange
        /// Two tensors share bytes of the data section.
        case overlappingTensors
        /// A value conversion (`floats()`, `int64s()`) not defined for the dtype.
        case unsupportedConversion
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "safetensors: \(message)" }
}

// MARK: - Element types

/// Element types of the safetensors format supported here.
public enum DType: String, CaseIterable, Sendable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }
}

/// Number of elements of `shape` (1 for the scalar shape `[]`), or an error for a
/// negative dimension or an overflowing product.
func elementCount(of shape: [Int]) throws -> Int {
    var count = 1
    for dim in shape {
        guard dim >= 0 else {
            throw SafetensorsError(.invalidShape, "negative dimension in shape \(shape)")
        }
        let (product, overflow) = count.multipliedReportingOverflow(by: dim)
        guard !overflow else {
            throw SafetensorsError(.invalidShape, "element count of shape \(shape) overflows")
        }
        count = product
    }
    return count
}

/// Byte count of a tensor of `shape` and `dtype`, with overflow checks.
func byteCount(of shape: [Int], dtype: DType) throws -> Int {
    let (bytes, overflow) = try elementCount(of: shape).multipliedReportingOverflow(by: dtype.byteSize)
    guard !overflow else {
        throw SafetensorsError(.invalidShape, "byte count of shape \(shape) (\(dtype.rawValue)) overflows")
    }
    return bytes
}

// MARK: - Half-precision conversions (exact, no Float16 needed)

/// IEEE 754 binary16 bits → Float. Exact for every input, including subnormals,
/// infinities and NaN (the payload is kept in the top mantissa bits).
@inline(__always)
func floatFromHalfBits(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32(h >> 10) & 0x1F
    let mantissa = UInt32(h & 0x03FF)
    if exponent == 0 {
        // Zero or subnormal: mantissa × 2^-24, exact in Float (mantissa < 2^10).
        let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
        return sign != 0 ? -magnitude : magnitude
    }
    if exponent == 0x1F {
        // Infinity or NaN.
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// bfloat16 bits → Float (the upper half of a binary32), exact.
@inline(__always)
func floatFromBFloat16Bits(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
}

// MARK: - Tensors

/// One tensor: its element type, shape and raw little-endian row-major bytes.
public struct TensorData: Equatable, Sendable {
    public var dtype: DType
    public var shape: [Int]
    public var bytes: [UInt8]

    /// Checks that `bytes.count == product(shape) × dtype.byteSize`.
    public init(dtype: DType, shape: [Int], bytes: [UInt8]) throws {
        let expected = try byteCount(of: shape, dtype: dtype)
        guard bytes.count == expected else {
            throw SafetensorsError(
                .sizeMismatch,
                "\(bytes.count) bytes for shape \(shape) of \(dtype.rawValue) (expected \(expected))")
        }
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// An F32 tensor from `floats` (row-major), which must have product(shape) elements.
    public init(floats: [Float], shape: [Int]) throws {
        let count = try elementCount(of: shape)
        guard floats.count == count else {
            throw SafetensorsError(.sizeMismatch, "\(floats.count) floats for shape \(shape) (expected \(count))")
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(count * 4)
        for value in floats {
            let bits = value.bitPattern
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
        }
        self.dtype = .f32
        self.shape = shape
        self.bytes = bytes
    }

    /// An I64 tensor from `int64s` (row-major), which must have product(shape) elements.
    public init(int64s: [Int64], shape: [Int]) throws {
        let count = try elementCount(of: shape)
        guard int64s.count == count else {
            throw SafetensorsError(.sizeMismatch, "\(int64s.count) integers for shape \(shape) (expected \(count))")
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(count * 8)
        for value in int64s {
            let bits = UInt64(bitPattern: value)
            for shift in stride(from: 0, to: 64, by: 8) {
                bytes.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift)))
            }
        }
        self.dtype = .i64
        self.shape = shape
        self.bytes = bytes
    }

    /// Number of elements (product of the shape).
    public var count: Int { bytes.count / dtype.byteSize }

    /// The values as Float, from F32, F16, BF16 (exact) or F64 (rounded to nearest).
    /// Throws `.unsupportedConversion` for integer and boolean tensors.
    public func floats() throws -> [Float] {
        let n = count
        let values = bytes.withUnsafeBytes { raw -> [Float]? in
            switch dtype {
            case .f32:
                return (0..<n).map {
                    Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
                }
            case .f16:
                return (0..<n).map {
                    floatFromHalfBits(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))
                }
            case .bf16:
                return (0..<n).map {
                    floatFromBFloat16Bits(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))
                }
            case .f64:
                return (0..<n).map {
                    Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))))
                }
            default:
                return nil
            }
        }
        guard let values else {
            throw SafetensorsError(.unsupportedConversion, "floats() is not defined for \(dtype.rawValue)")
        }
        return values
    }

    /// The values as Int64, from I64, I32, I16, I8, U8 or BOOL (0/1).
    /// Throws `.unsupportedConversion` for floating-point tensors.
    public func int64s() throws -> [Int64] {
        let n = count
        let values = bytes.withUnsafeBytes { raw -> [Int64]? in
            switch dtype {
            case .i64:
                return (0..<n).map {
                    Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))
                }
            case .i32:
                return (0..<n).map {
                    Int64(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)))
                }
            case .i16:
                return (0..<n).map {
                    Int64(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self)))
                }
            case .i8:
                return (0..<n).map { Int64(Int8(bitPattern: raw[$0])) }
            case .u8:
                return (0..<n).map { Int64(raw[$0]) }
            case .bool:
                return (0..<n).map { raw[$0] != 0 ? 1 : 0 }
            default:
                return nil
            }
        }
        guard let values else {
            throw SafetensorsError(.unsupportedConversion, "int64s() is not defined for \(dtype.rawValue)")
        }
        return values
    }
}

// MARK: - Files

/// The contents of a safetensors file: named tensors plus string metadata.
public struct SafetensorsFile: Equatable, Sendable {
    /// Limit on the declared header length (same as the reference implementation).
    public static let maxHeaderLength = 100_000_000

    public var tensors: [String: TensorData]
    /// The `__metadata__` object (string → string); empty if absent.
    public var metadata: [String: String]

    public init(tensors: [String: TensorData] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Tensor names in the deterministic order `encode()` uses (sorted).
    public var names: [String] { tensors.keys.sorted() }

    public subscript(name: String) -> TensorData? {
        get { tensors[name] }
        set { tensors[name] = newValue }
    }

    // MARK: Reading

    public static func read(contentsOf path: String) throws -> SafetensorsFile {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SafetensorsError(.io, "cannot read \(path): \(error.localizedDescription)")
        }
        return try decode([UInt8](data))
    }

    public static func decode(_ bytes: [UInt8]) throws -> SafetensorsFile {
        let (object, dataStart) = try header(bytes)
        let dataSize = bytes.count - dataStart
        var file = SafetensorsFile()
        var ranges: [(begin: Int, end: Int, name: String)] = []
        for (name, value) in object {
            if name == "__metadata__" {
                file.metadata = try parseMetadata(value)
                continue
            }
            let (dtype, shape, begin, end) = try tensorEntry(name, value, dataSize: dataSize)
            ranges.append((begin, end, name))
            file.tensors[name] = try TensorData(
                dtype: dtype, shape: shape, bytes: Array(bytes[(dataStart + begin)..<(dataStart + end)]))
        }
        try checkNoOverlap(&ranges)
        return file
    }

    /// The header's JSON object and where the data section starts.
    private static func header(_ bytes: [UInt8]) throws -> (object: [String: Any], dataStart: Int) {
        guard bytes.count >= 8 else {
            throw SafetensorsError(.truncated, "\(bytes.count) bytes is shorter than the 8-byte header length")
        }
        var declared: UInt64 = 0
        for i in (0..<8).reversed() { declared = declared << 8 | UInt64(bytes[i]) }
        guard declared <= UInt64(maxHeaderLength) else {
            throw SafetensorsError(.headerTooLarge, "header length \(declared) exceeds the \(maxHeaderLength)-byte limit")
        }
        let headerLength = Int(declared)
        guard headerLength <= bytes.count - 8 else {
            throw SafetensorsError(
                .headerTooLarge, "header length \(headerLength) exceeds the \(bytes.count - 8) bytes after the length")
        }
        let dataStart = 8 + headerLength
        let headerBytes = bytes[8..<dataStart]
        guard String(bytes: headerBytes, encoding: .utf8) != nil else {
            throw SafetensorsError(.invalidJSON, "header is not valid UTF-8")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(headerBytes), options: [])
        } catch {
            throw SafetensorsError(.invalidJSON, "header is not valid JSON: \(error.localizedDescription)")
        }
        guard let object = json as? [String: Any] else {
            throw SafetensorsError(.invalidJSON, "header is not a JSON object")
        }
        return (object, dataStart)
    }

    /// One tensor's header entry, checked: dtype, shape, and its byte range in the data
    /// section (inside it, and as long as the shape and dtype need).
    private static func tensorEntry(_ name: String, _ value: Any, dataSize: Int) throws
        -> (dtype: DType, shape: [Int], begin: Int, end: Int) {
        guard let entry = value as? [String: Any] else {
            throw SafetensorsError(.invalidHeader, "entry for tensor '\(name)' is not an object")
        }
        guard let dtypeName = entry["dtype"] as? String else {
            throw SafetensorsError(.invalidHeader, "tensor '\(name)' has no string 'dtype'")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw SafetensorsError(.unknownDType, "tensor '\(name)' has unknown dtype '\(dtypeName)'")
        }
        guard let shapeValues = entry["shape"] as? [Any] else {
            throw SafetensorsError(.invalidHeader, "tensor '\(name)' has no array 'shape'")
        }
        var shape: [Int] = []
        shape.reserveCapacity(shapeValues.count)
        for dimValue in shapeValues {
            guard let dim = jsonInteger(dimValue) else {
                throw SafetensorsError(.invalidShape, "tensor '\(name)' has a shape entry that is not an integer")
            }
            shape.append(dim)
        }
        guard let offsetValues = entry["data_offsets"] as? [Any], offsetValues.count == 2 else {
            throw SafetensorsError(.invalidHeader, "tensor '\(name)' has no two-element 'data_offsets'")
        }
        guard let begin = jsonInteger(offsetValues[0]), let end = jsonInteger(offsetValues[1]),
              begin >= 0, begin <= end, end <= dataSize
        else {
            throw SafetensorsError(
                .offsetsOutOfRange,
                "tensor '\(name)' has data_offsets \(offsetValues) outside the \(dataSize)-byte data section")
        }
        let expected = try byteCount(of: shape, dtype: dtype)
        guard end - begin == expected else {
            throw SafetensorsError(
                .sizeMismatch,
                "tensor '\(name)' spans \(end - begin) bytes but shape \(shape) of \(dtype.rawValue) needs \(expected)")
        }
        return (dtype, shape, begin, end)
    }

    /// No two non-empty tensors may share bytes.
    private static func checkNoOverlap(_ ranges: inout [(begin: Int, end: Int, name: String)]) throws {
        ranges.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var previousEnd = 0
        var previousName = ""
        for range in ranges where range.end > range.begin {
            guard range.begin >= previousEnd else {
                throw SafetensorsError(
                    .overlappingTensors, "tensors '\(previousName)' and '\(range.name)' overlap in the data section")
            }
            previousEnd = range.end
            previousName = range.name
        }
    }

    /// A JSON number that is an integer (not a boolean, not a fraction) and fits in Int.
    private static func jsonInteger(_ value: Any) -> Int? {
        guard let number = value as? NSNumber else { return nil }
        // Booleans come back as NSNumber with type "c"; fractions as "d"/"f".
        switch String(cString: number.objCType) {
        case "c", "C", "d", "f": return nil
        default: return value as? Int
        }
    }

    private static func parseMetadata(_ value: Any) throws -> [String: String] {
        guard let object = value as? [String: Any] else {
            throw SafetensorsError(.invalidHeader, "__metadata__ is not an object")
        }
        var metadata: [String: String] = [:]
        for (key, entry) in object {
            guard let string = entry as? String else {
                throw SafetensorsError(.invalidHeader, "__metadata__ value for '\(key)' is not a string")
            }
            metadata[key] = string
        }
        return metadata
    }

    // MARK: Writing

    /// Serialises deterministically: `__metadata__` first (keys sorted, omitted if empty),
    /// then tensors in sorted name order, with data laid out contiguously in that order;
    /// the header is padded with spaces so the data section starts at a multiple of 8.
    public func encode() -> [UInt8] {
        var header = "{"
        var first = true
        if !metadata.isEmpty {
            header += "\"__metadata__\":{"
            header += metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
                .joined(separator: ",")
            header += "}"
            first = false
        }
        let order = names
        var offset = 0
        for name in order {
            let tensor = tensors[name]!
            let end = offset + tensor.bytes.count
            if !first { header += "," }
            first = false
            header += "\(jsonString(name)):{\"dtype\":\"\(tensor.dtype.rawValue)\","
            header += "\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],"
            header += "\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        header += "}"

        var headerBytes = Array(header.utf8)
        let padding = (8 - (8 + headerBytes.count) % 8) % 8
        headerBytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padding))

        var out: [UInt8] = []
        out.reserveCapacity(8 + headerBytes.count + offset)
        let length = UInt64(headerBytes.count)
        for shift in stride(from: 0, to: 64, by: 8) {
            out.append(UInt8(truncatingIfNeeded: length >> UInt64(shift)))
        }
        out.append(contentsOf: headerBytes)
        for name in order {
            out.append(contentsOf: tensors[name]!.bytes)
        }
        return out
    }

    /// Writes `encode()` to a temporary file next to `path`, then renames it into place,
    /// so readers never see a partial file.
    public func write(to path: String) throws {
        let temporary = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try Data(encode()).write(to: URL(fileURLWithPath: temporary))
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw SafetensorsError(.io, "cannot write \(temporary): \(error.localizedDescription)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw SafetensorsError(.io, "cannot rename \(temporary) to \(path): \(reason)")
        }
    }
}

/// A JSON string literal for `s`, escaping quotes, backslashes and control characters.
private func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default:
            out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
