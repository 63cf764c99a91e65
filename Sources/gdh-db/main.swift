import ArgumentParser
import Foundation
import GDHClient
import HashStore
#if canImport(Glibc)
import Glibc
#endif

/// `gdh inspect` and `gdh dump`: the client `gdh` runs this executable for them, so that
/// it links no LMDB. Argument parsing and printing only; the reading is `ReadOnlyStore`.
struct GDHDatabase: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gdh",
        abstract: "Read a gdh database directory directly, without a daemon.",
        discussion: """
        The database is opened read-only: nothing in it changes, no file is created in its \
        directory, and a running gdhd goes on serving it (the read is one snapshot). \
        Exit status: 0 on success, 1 when the directory holds no readable gdh database \
        (the message goes to standard error), 64 on a usage error.
        """,
        subcommands: [Inspect.self, Dump.self]
    )
}

/// Reports `gdh <verb>: <message>` on standard error; exit status 1.
func fail(_ verb: String, _ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("gdh \(verb): \(message)\n".utf8))
    return ExitCode(1)
}

/// Opens `dir` read-only and runs `body`; store errors become exit status 1.
func reading<T>(_ dir: String, _ verb: String, _ body: (ReadOnlyStore) throws -> T) throws -> T {
    do {
        let store = try ReadOnlyStore(directory: dir)
        defer { store.close() }
        return try body(store)
    } catch let e as StoreError {
        throw fail(verb, e.description)
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a database's settings, counts, LMDB page figures and table shapes.",
        discussion: """
        Prints `name value` lines named as in `gdh stats` (format, bits, items, next_id, \
        substrings, substrings_setting, pending, tables_next_id, image_items, codes_model, file_bytes, \
        map_bytes, page_bytes, pages_used, free_pages, lock_file), then LMDB's figures for \
        each named database and the shape of each stored multi-index table. \
        Docs/operations.md describes every field.
        """
    )
    @Argument(help: "The database directory (what gdhd --db was given).") var dir: String
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let report = try reading(dir, "inspect") { try $0.report() }
        if json {
            let data = try JSONSerialization.data(withJSONObject: report.jsonObject, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(report.text, terminator: "")
        }
    }
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every item as a `key hex` line, the format `gdh import` reads.",
        discussion: """
        Lines come in id order (the order the keys were first added), from one snapshot. \
        Restore into a new database with `gdh import FILE`. With --tables, prints the \
        stored multi-index tables decoded and the pending ids instead (the format is in \
        Docs/operations.md). The first line is `#gdh-dump 1`, which tells `gdh import` \
        that no later line is a comment, so keys that begin with `#` come back too.
        """
    )
    @Argument(help: "The database directory (what gdhd --db was given).") var dir: String
    @Option(help: ArgumentHelp("Write to this file instead of standard output; it appears only when complete (written beside it, then renamed).", valueName: "file"))
    var out: String?
    @Flag(help: "Print the stored tables and the pending ids instead of the items.") var tables = false

    func validate() throws {
        guard let out else { return }
        guard !out.isEmpty, !out.hasSuffix("/") else { throw ValidationError("--out must name a file") }
        // The dump never writes into the database directory.
        let parent = (out as NSString).deletingLastPathComponent
        if let p = realpath(parent.isEmpty ? "." : parent, nil), let d = realpath(dir, nil) {
            defer { free(p); free(d) }
            if strcmp(p, d) == 0 { throw ValidationError("--out must not be in the database directory") }
        }
    }

    func run() throws {
        var output = FileDescriptorOutput(fd: STDOUT_FILENO)
        var partial: String?
        if let out {
            let tmp = out + ".partial-\(getpid())"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw fail("dump", "cannot create \(tmp): \(String(cString: strerror(errno)))") }
            output = FileDescriptorOutput(fd: fd)
            partial = tmp
        }
        defer {
            if let partial {
                close(output.fd)
                unlink(partial)
            }
        }
        let items = try reading(dir, "dump") { store -> Int? in
            do {
                if tables {
                    try store.dumpTables(output.write)
                    return nil
                }
                try Array((ImportFile.dumpMarker + "\n").utf8).withUnsafeBytes { try output.write($0) }
                return try store.dumpItems(output.write)
            } catch let e as OutputError {
                throw fail("dump", e.description)
            }
        }
        if let out, let tmp = partial {
            guard fsync(output.fd) == 0, rename(tmp, out) == 0 else {
                throw fail("dump", "cannot write \(out): \(String(cString: strerror(errno)))")
            }
            partial = nil
            close(output.fd)
            if let items { print("wrote \(items) items to \(out)") }
        }
    }
}

struct OutputError: Error, CustomStringConvertible {
    let description: String
}

/// Writes whole buffers to a file descriptor.
struct FileDescriptorOutput {
    let fd: Int32

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw OutputError(description: "cannot write the dump: \(String(cString: strerror(errno)))") }
            done += n
        }
    }
}

GDHDatabase.main()
