import Foundation
import GDHClient
import Logging
import Testing
import WireProtocol
@testable import Daemon

/// A daemon in this process on a fresh database and socket, stopped by `stop()`.
final class TestDaemon {
    let dir: String
    let socket: String
    var daemon: Daemon?

    init(bits: Int? = 64, m: Int? = nil, maxLineBytes: Int = 4 << 20, dir: String? = nil,
         configure: (inout DaemonConfiguration) -> Void = { _ in }) throws {
        let id = UUID().uuidString.prefix(8)
        self.dir = dir ?? NSTemporaryDirectory() + "gdh-e2e-\(id)"
        self.socket = NSTemporaryDirectory() + "gdh-e2e-\(id).sock"
        try start(bits: bits, m: m, maxLineBytes: maxLineBytes, configure: configure)
    }

    func start(bits: Int? = nil, m: Int? = nil, maxLineBytes: Int = 4 << 20,
               configure: (inout DaemonConfiguration) -> Void = { _ in }, logger given: Logger? = nil) throws {
        var config = DaemonConfiguration(databasePath: dir, socketPath: socket)
        config.bits = bits
        config.m = m
        config.maxLineBytes = maxLineBytes
        config.loopThreads = 2
        config.queryThreads = 2
        configure(&config)
        var logger = given ?? Logger(label: "test")
        if given == nil { logger.logLevel = .warning }
        let d = try Daemon(configuration: config, logger: logger)
        try d.start()
        daemon = d
    }

    func stop() {
        daemon?.shutdown()
        daemon = nil
    }

    func client() throws -> LineClient { try LineClient(socketPath: socket) }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
        unlink(socket)
    }
}

/// Raw socket I/O for tests that need exact bytes (garbage, partial lines, half-close).
final class RawSocket {
    let fd: Int32
    init(path: String) throws {
        fd = try UnixSocket.connect(path)
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
            if n <= 0 { return }
            off += n
        }
    }
    func send(_ s: String) { send(Array(s.utf8)) }
    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until `lines` lines have arrived (or EOF / timeout).
    func readLines(_ lines: Int) -> [String] {
        var buf = [UInt8](), out = [String]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while out.count < lines {
            if let nl = buf.firstIndex(of: 0x0A) {
                out.append(String(decoding: buf[..<nl], as: UTF8.self))
                buf.removeSubrange(...nl)
                continue
            }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            buf += chunk[0..<n]
        }
        return out
    }

    /// Everything until the daemon closes the connection.
    func readToEnd() -> String {
        var all = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            all += chunk[0..<n]
        }
        return String(decoding: all, as: UTF8.self)
    }
}

/// The built products folder (where gdhd sits beside the test bundle).
func productsDirectory() -> URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

func okText(_ r: Response) -> String? {
    if case .ok(let t) = r { return t }
    return nil
}

func listLines(_ r: Response) -> [String]? {
    if case .list(let l) = r { return l }
    return nil
}
