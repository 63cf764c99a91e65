import ArgumentParser
import Foundation
import GDHClient
#if canImport(Glibc)
import Glibc
#endif

/// A failure of a command: ArgumentParser prints its description and exits with status 1.
public struct Failure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Prints one JSON object (sorted keys) on a line.
public func printJSON(_ value: Any) {
    if let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]),
       let s = String(data: data, encoding: .utf8) {
        print(s)
    }
}

/// The absolute path with symbolic links resolved, or nil if it does not exist.
public func canonicalPath(_ p: String) -> String? {
    guard let r = realpath(p, nil) else { return nil }
    defer { free(r) }
    return String(cString: r)
}

/// Options every verb that talks to the daemon shares.
public struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The daemon's socket (default: $GDH_SOCKET or /tmp/gdh.sock).", valueName: "path"))
    public var socket: String?

    public init() {}

    public var socketPath: String {
        socket ?? ProcessInfo.processInfo.environment["GDH_SOCKET"] ?? "/tmp/gdh.sock"
    }

    public func connect() throws -> LineClient {
        do { return try LineClient(socketPath: socketPath) } catch {
            throw Failure("\(error)")
        }
    }
}

/// A progress line on standard error, redrawn at most ten times a second; silent
/// when standard error is not a terminal.
public struct ProgressBar {
    public let total: Int
    public let label: String
    let enabled = isatty(STDERR_FILENO) == 1
    let start = Date()
    var lastDraw = Date.distantPast

    public init(total: Int, label: String) {
        self.total = total
        self.label = label
    }

    public mutating func update(_ done: Int, force: Bool = false) {
        guard enabled else { return }
        let now = Date()
        guard force || now.timeIntervalSince(lastDraw) >= 0.1 else { return }
        lastDraw = now
        let width = 30
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let filled = Int(fraction * Double(width))
        let rate = Double(done) / max(now.timeIntervalSince(start), 1e-6)
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        let line = String(format: "\r%@ [%@] %3d%% %d/%d  %.0f/s", label, bar, Int(fraction * 100), done, total, rate)
        FileHandle.standardError.write(Data(line.utf8))
    }

    public func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
