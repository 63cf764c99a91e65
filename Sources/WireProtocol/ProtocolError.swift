/// Errors of the wire protocol (PROTOCOL.md section 5): `ERR <CODE> <message>`.

/// The upper-case word after `ERR`.
public enum ErrorCode: String, Sendable, CaseIterable, Hashable {
    case badRequest = "BADREQUEST"
    case badKey = "BADKEY"
    case badCode = "BADCODE"
    case notFound = "NOTFOUND"
    case tooLong = "TOOLONG"
    case noModel = "NOMODEL"
    case modelMismatch = "MODELMISMATCH"
    case badImage = "BADIMAGE"
    case forbidden = "FORBIDDEN"
    case corrupt = "CORRUPT"
    case diskFull = "DISKFULL"
    case shutdown = "SHUTDOWN"
    case internalError = "INTERNAL"

    /// A generic message, used when an error is built with an empty message.
    public var defaultMessage: String {
        switch self {
        case .badRequest: return "bad request"
        case .badKey: return "bad key"
        case .badCode: return "bad code"
        case .notFound: return "not found"
        case .tooLong: return "request line too long"
        case .noModel: return "no model is loaded"
        case .modelMismatch: return "the stored image codes were made by another model; run REENCODE"
        case .badImage: return "the image cannot be read"
        case .forbidden: return "that path is outside the allowed directories"
        case .corrupt: return "the database is inconsistent"
        case .diskFull: return "no room on the disk for the database to grow; the write was not applied"
        case .shutdown: return "the daemon is shutting down"
        case .internalError: return "internal error"
        }
    }
}

/// A failed request. The message is always one non-empty line: the initializer replaces
/// line breaks and other control characters, and an empty message by the code's default.
public struct ProtocolError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let code: ErrorCode
    public let message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        let line = LineSafety.singleLine(message)
        self.message = line.isEmpty ? code.defaultMessage : line
    }

    public init(code: ErrorCode, message: String) {
        self.init(code, message)
    }

    /// `CODE message`, as after `ERR ` on the wire.
    public var description: String { "\(code.rawValue) \(message)" }

    // MARK: Ready-made errors for the daemon

    /// `ERR NOTFOUND no item has key '<key>'`.
    public static func notFound(key: String) -> ProtocolError {
        ProtocolError(.notFound, "no item has key \(LineSafety.quote(key))")
    }

    /// `ERR TOOLONG ...` for a request line over `limit` bytes.
    public static func tooLong(limit: Int) -> ProtocolError {
        ProtocolError(.tooLong, "request line is longer than \(limit) bytes")
    }

    /// `ERR NOMODEL ...` for an IMAGE/IMAGE64/SKETCH/SKETCH64 request without a model.
    public static func noModel(for source: CodeSource) -> ProtocolError {
        ProtocolError(.noModel, "\(source.word) requests need a GDH model to turn images and sketches into codes, and this daemon has none loaded")
    }

    /// `ERR MODELMISMATCH ...` for a request whose code must be comparable with stored
    /// image codes that another model made (until a REENCODE completes).
    public static func modelMismatch(stored: String, loaded: String) -> ProtocolError {
        ProtocolError(.modelMismatch, "the database's image codes were made by model \(stored), this daemon runs model \(loaded): run REENCODE to encode the stored images with this model")
    }

    /// `ERR SHUTDOWN ...`.
    public static let shutdown = ProtocolError(.shutdown, "the daemon is shutting down; request not started")
}
