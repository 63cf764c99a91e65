import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A verb of `gdh` that another executable runs, so that `gdh` itself links no neural
/// network, OpenBLAS or LMDB code: `gdh train ARGS` replaces itself (execv) with
/// `gdh-train train ARGS`, `gdh bench ARGS` with `gdh-bench ARGS`.
public struct SiblingVerb: Sendable, Equatable {
    /// The verb as typed after `gdh`.
    public let verb: String
    /// The executable that runs it, looked up beside `gdh`, then on PATH.
    public let executable: String
    /// Whether the verb is also the sibling's first argument (`gdh train X` runs
    /// `gdh-train train X`) or is dropped (`gdh bench search X` runs `gdh-bench search X`).
    public let passesVerb: Bool
    /// The one-line help of the verb, shown by `gdh --help` and by the sibling itself.
    public let abstract: String

    public init(verb: String, executable: String, passesVerb: Bool, abstract: String) {
        self.verb = verb
        self.executable = executable
        self.passesVerb = passesVerb
        self.abstract = abstract
    }

    /// The sibling's arguments (without its argv[0]) for what followed the verb.
    public func arguments<C: Collection>(_ rest: C) -> [String] where C.Element == String {
        (passesVerb ? [verb] : []) + Array(rest)
    }
}

public enum Siblings {
    /// Every verb that `gdh` hands to another executable.
    public static let verbs: [SiblingVerb] = [
        SiblingVerb(verb: "synth", executable: "gdh-train", passesVerb: true,
                    abstract: "Write a synthetic sketch/photo data set (DIR/images/<class>/<n>.png, DIR/sketches/<class>/<n>.png)."),
        SiblingVerb(verb: "train", executable: "gdh-train", passesVerb: true,
                    abstract: "Train a GDH model on a dataset (the objective of Docs/training.md)."),
        SiblingVerb(verb: "eval", executable: "gdh-train", passesVerb: true,
                    abstract: "Measure the retrieval quality of a model, or of the HOG + ITQ baseline, on a dataset split."),
        SiblingVerb(verb: "bench", executable: "gdh-bench", passesVerb: false,
                    abstract: "Benchmarks: in-process search, queries, ingest and soak over the socket, encoders, training steps, store maintenance."),
        SiblingVerb(verb: "inspect", executable: "gdh-db", passesVerb: true,
                    abstract: "Print a database's header and table summary, reading its files directly (no daemon)."),
        SiblingVerb(verb: "dump", executable: "gdh-db", passesVerb: true,
                    abstract: "Dump a database's items and tables as text, reading its files directly (no daemon)."),
    ]

    public static func verb(_ name: String) -> SiblingVerb? {
        verbs.first { $0.verb == name }
    }

    /// The abstract of a verb of the table (for the sibling's own command configuration).
    public static func abstract(of name: String) -> String {
        verb(name)?.abstract ?? ""
    }

    /// The sibling verb and its arguments when `gdh`'s arguments (without argv[0]) start
    /// with a sibling's verb, or with `help` and one (`gdh help train` runs
    /// `gdh-train help train`, `gdh help bench search` runs `gdh-bench help search`);
    /// nil when `gdh` parses them itself.
    public static func route(_ arguments: [String]) -> (verb: SiblingVerb, arguments: [String])? {
        guard let first = arguments.first else { return nil }
        if let v = verb(first) { return (v, v.arguments(arguments.dropFirst())) }
        if first == "help", arguments.count >= 2, let v = verb(arguments[1]) {
            return (v, ["help"] + v.arguments(arguments.dropFirst(2)))
        }
        return nil
    }

    /// Where `executable` is: in `ownDirectory` (the directory of the running `gdh`) if it
    /// is an executable file there, else in the first directory of `path` (a PATH value,
    /// `:`-separated; empty entries are skipped) that has it; nil if none has.
    public static func locate(_ executable: String, ownDirectory: String?, path: String?,
                              isExecutable: (String) -> Bool = isExecutableFile) -> String? {
        var directories: [String] = []
        if let ownDirectory { directories.append(ownDirectory) }
        if let path { directories += path.split(separator: ":").map(String.init) }
        for d in directories {
            let candidate = (d.hasSuffix("/") ? d : d + "/") + executable
            if isExecutable(candidate) { return candidate }
        }
        return nil
    }

    /// A regular file this process may execute.
    public static func isExecutableFile(_ path: String) -> Bool {
        var s = stat()
        return stat(path, &s) == 0 && (s.st_mode & S_IFMT) == S_IFREG && access(path, X_OK) == 0
    }

    /// The directory of the running executable, symbolic links resolved (/proc/self/exe).
    public static func ownDirectory() -> String? {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        return (exe as NSString).deletingLastPathComponent
    }

    /// What `gdh` says when the sibling is nowhere to be found.
    public static func missingMessage(_ v: SiblingVerb, ownDirectory: String?) -> String {
        "gdh: '\(v.verb)' is run by the \(v.executable) executable, which is not beside gdh (\(ownDirectory ?? "its directory is unknown")) "
            + "nor on PATH; build it with: swift build --product \(v.executable)"
    }

    /// Replaces this process with itself (/proc/self/exe, same arguments) with the
    /// environment variable `name` set to `value`, unless it is set already. Returns only
    /// when it did not (the variable was set, or the exec failed: the caller goes on as it is).
    public static func reexecSelf(setting name: String, to value: String) {
        guard getenv(name) == nil, let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            return
        }
        setenv(name, value, 1)
        var cArgs = CommandLine.arguments.map { strdup($0) } + [nil]
        execv(exe, &cArgs)
    }

    /// If `arguments` (without argv[0]) are a sibling's, replaces this process with the
    /// sibling (its output and exit status are then the command's), or prints why it
    /// cannot and exits 1. Returns only when the arguments are not a sibling's.
    public static func execIfSiblingVerb(_ arguments: [String]) {
        guard let (v, rest) = route(arguments) else { return }
        let own = ownDirectory()
        guard let exe = locate(v.executable, ownDirectory: own, path: ProcessInfo.processInfo.environment["PATH"]) else {
            FileHandle.standardError.write(Data((missingMessage(v, ownDirectory: own) + "\n").utf8))
            exit(1)
        }
        var cArgs: [UnsafeMutablePointer<CChar>?] = ([exe] + rest).map { strdup($0) } + [nil]
        execv(exe, &cArgs)
        // execv returns only on failure.
        let reason = String(cString: strerror(errno))
        FileHandle.standardError.write(Data("gdh: cannot run \(exe) for '\(v.verb)': \(reason)\n".utf8))
        exit(1)
    }
}
