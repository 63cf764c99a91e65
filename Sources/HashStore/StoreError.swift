import Foundation

/// Errors of the store, each with a message fit for a client.
public enum StoreError: Error, CustomStringConvertible, Equatable {
    /// Another process holds the database.
    case locked(String)
    /// The database exists with other settings than asked for.
    case mismatch(String)
    /// A bad argument (for example a substring count out of range).
    case invalid(String)
    /// Stored data disagree with themselves (VERIFY).
    case corrupt(String)
    /// The id space (2^32 − 1 ids) is used up.
    case full(String)
    /// LMDB or the file system failed; nothing was applied.
    case io(String)
    /// A directory opened read-only (`ReadOnlyStore`) is missing or holds no gdh database.
    case notADatabase(String)

    public var description: String {
        switch self {
        case .locked(let s), .mismatch(let s), .invalid(let s), .corrupt(let s), .full(let s), .io(let s), .notADatabase(let s):
            return s
        }
    }
}
