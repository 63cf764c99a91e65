import Dispatch
import Foundation
import GDHCommandLine
import Testing

/// The built products folder (where gdh sits beside the test bundle).
private func productsDirectory() -> URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

/// Runs an executable to its end; standard error is read on another thread, so neither
/// pipe can fill up and stall the child.
private func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil)
    throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

private func gdh(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    try run(productsDirectory().appendingPathComponent("gdh").path, arguments)
}

/// The first line of `help` that lists `name` as a subcommand (two spaces, the name, a space).
private func listing(_ name: String, in help: String) -> String? {
    help.split(separator: "\n").map(String.init).first { $0.hasPrefix("  \(name) ") }
}

@Suite("The gdh executables as processes", .serialized)
struct ExecutableTests {
    /// Swift symbols carry their module's name length-prefixed after `$s`, so `$s9NeuralNet`
    /// matches the NeuralNet module only; the C names are OpenBLAS's and LMDB's entry points.
    static let forbiddenSymbols = ["NeuralNet", "$s3GDH", "$s8Training", "$s10Evaluation", "$s8Datasets",
                                   "$s11Safetensors", "$s10MultiIndex", "$s9HashStore", "cblas_", "mdb_"]
    /// Shared libraries a thin client has no use for: OpenBLAS, LMDB, the image codecs.
    static let forbiddenLibraries = ["blas", "lmdb", "png", "jpeg"]

    @Test("gdh links no OpenBLAS, LMDB or NeuralNet code (its DT_NEEDED entries and symbols)")
    func thinClient() throws {
        let path = productsDirectory().appendingPathComponent("gdh").path
        let dynamic = try run("/usr/bin/readelf", ["--dynamic", "--wide", path])
        try #require(dynamic.status == 0, "readelf -d failed: \(dynamic.err)")
        // Lines like ` 0x0000000000000001 (NEEDED)  Shared library: [libopenblas.so.0]`.
        let needed = dynamic.out.split(separator: "\n").filter { $0.contains("(NEEDED)") }.compactMap { line -> String? in
            guard let open = line.firstIndex(of: "["), let close = line.lastIndex(of: "]") else { return nil }
            return String(line[line.index(after: open)..<close])
        }
        #expect(needed.contains { $0.hasPrefix("libc.so") }, "no DT_NEEDED entries read: \(dynamic.out.prefix(500))")
        for library in needed {
            #expect(!Self.forbiddenLibraries.contains { library.contains($0) }, "gdh needs \(library)")
        }

        let symbols = try run("/usr/bin/readelf", ["--syms", "--wide", path])
        try #require(symbols.status == 0, "readelf --syms failed: \(symbols.err)")
        // The name is the last field of each symbol line (after type, bind, visibility, index).
        let names = symbols.out.split(separator: "\n").compactMap { line -> Substring? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count >= 8 ? fields[7] : nil
        }
        // The check can see module code: gdh's own client does show up.
        #expect(names.contains { $0.hasPrefix("$s9GDHClient") }, "no GDHClient symbols found; is the binary stripped?")
        for forbidden in Self.forbiddenSymbols {
            let hits = names.filter { $0.contains(forbidden) }
            #expect(hits.isEmpty, "gdh has \(hits.count) symbols with \(forbidden), e.g. \(hits.prefix(3))")
        }
    }

    @Test("gdh --help lists every verb, the siblings' with their one-line abstracts")
    func helpListsVerbs() throws {
        let r = try gdh(["--help"])
        #expect(r.status == 0)
        let own = ["ping", "add", "import", "get", "del", "knn", "range", "stats", "metrics", "compact", "backup",
                   "rebuild", "verify", "reencode", "add-images", "query", "generate"]
        for verb in own {
            #expect(listing(verb, in: r.out) != nil, "gdh --help does not list \(verb)")
        }
        for v in Siblings.verbs {
            let line = try #require(listing(v.verb, in: r.out), "gdh --help does not list \(v.verb)")
            // ArgumentParser wraps the abstract; its first words are on the verb's line.
            let start = v.abstract.split(separator: " ").prefix(3).joined(separator: " ")
            #expect(line.contains(start), "\(v.verb): \(line)")
        }
    }

    @Test("gdh train --help and gdh help train print gdh-train's help for train")
    func trainHelp() throws {
        for args in [["train", "--help"], ["help", "train"]] {
            let r = try gdh(args)
            #expect(r.status == 0, "\(args): \(r.err)")
            #expect(r.out.contains("USAGE: gdh-train train"), "\(args): \(r.out.prefix(300))")
            for option in ["--data <dir>", "--out <file>", "--hash-lr-factor", "--no-generator", "--resume"] {
                #expect(r.out.contains(option), "\(args): no \(option)")
            }
        }
        let eval = try gdh(["eval", "--help"])
        #expect(eval.status == 0 && eval.out.contains("USAGE: gdh-train eval") && eval.out.contains("--baseline"))
        let synth = try gdh(["synth", "--help"])
        #expect(synth.status == 0 && synth.out.contains("USAGE: gdh-train synth") && synth.out.contains("--per-class"))
    }

    @Test("gdh bench --help lists every benchmark; gdh bench search --help shows its options")
    func benchHelp() throws {
        let r = try gdh(["bench", "--help"])
        #expect(r.status == 0, "\(r.err)")
        for bench in ["search", "socket", "ingest", "soak", "encode", "train", "depthwise", "compact", "deletes", "writes"] {
            #expect(listing(bench, in: r.out) != nil, "gdh bench --help does not list \(bench)")
        }
        let search = try gdh(["bench", "search", "--help"])
        #expect(search.status == 0 && search.out.contains("USAGE: gdh-bench search") && search.out.contains("--planner"))
    }

    @Test("gdh bench writes applies every code of a file to a store in process and reports its phases; a file of partial codes is refused")
    func benchWrites() throws {
        let fm = FileManager.default
        let dir = NSTemporaryDirectory() + "gdh-bench-writes-\(UUID().uuidString.prefix(8))"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: dir) }
        var rng = SystemRandomNumberGenerator()
        let codes = (0..<(3_000 * 8)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        fm.createFile(atPath: dir + "/codes", contents: Data(codes))
        let r = try gdh(["bench", "writes", "--codes", dir + "/codes", "--bits", "64", "--batch", "700", "--runs", "2",
                         "--dir", dir, "--json"])
        #expect(r.status == 0, "\(r.err)")
        let out = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        #expect(out["writes"] as? Int == 3_000 && out["batch"] as? Int == 700)
        let runs = try #require(out["runs"] as? [[String: Any]])
        #expect(runs.count == 2)
        for run in runs {
            #expect((run["writes_per_second"] as? Double ?? 0) > 0)
            let phases = try #require(run["phase_us_per_write"] as? [String: Double])
            #expect(Set(phases.keys).isSuperset(of: ["puts", "commit", "mirror", "fold"]))
        }
        // The temporary stores are gone.
        #expect(try fm.contentsOfDirectory(atPath: dir) == ["codes"])
        fm.createFile(atPath: dir + "/odd", contents: Data(codes.prefix(13)))
        let bad = try gdh(["bench", "writes", "--codes", dir + "/odd", "--bits", "64"])
        #expect(bad.status != 0 && bad.err.contains("not a whole number"), "\(bad.err)")
    }

    @Test("Usage errors exit 64, in gdh and in the siblings it runs")
    func usageErrors() throws {
        for args in [["knn"], ["no-such-verb"], ["train"], ["bench", "search", "--bits", "64"], ["bench", "no-such-bench"]] {
            let r = try gdh(args)
            #expect(r.status == 64, "gdh \(args.joined(separator: " ")) exited \(r.status): \(r.err)")
            #expect(r.err.contains("Error:") || r.err.contains("Usage:"), "\(args): \(r.err)")
        }
    }

    @Test("gdh alone in a directory, with the siblings neither beside it nor on PATH: the message and exit 1")
    func missingSibling() throws {
        let fm = FileManager.default
        let dir = NSTemporaryDirectory() + "gdh-alone-\(UUID().uuidString.prefix(8))"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: dir) }
        let alone = dir + "/gdh"
        try fm.copyItem(atPath: productsDirectory().appendingPathComponent("gdh").path, toPath: alone)
        let realDir = try #require(canonicalPath(dir))
        for (args, verb, executable) in [(["train", "--help"], "train", "gdh-train"), (["bench", "search"], "bench", "gdh-bench"),
                                         (["help", "eval"], "eval", "gdh-train")] {
            let r = try run(alone, args, environment: ["PATH": ""])
            #expect(r.status == 1)
            #expect(r.out.isEmpty)
            #expect(r.err == "gdh: '\(verb)' is run by the \(executable) executable, which is not beside gdh (\(realDir)) nor on PATH; "
                + "build it with: swift build --product \(executable)\n")
        }
        // gdh's own verbs still work there.
        #expect(try run(alone, ["--help"], environment: ["PATH": ""]).status == 0)
        // And on PATH the sibling is found.
        let onPath = try run(alone, ["train", "--help"], environment: ["PATH": "/nonexistent:" + productsDirectory().path])
        #expect(onPath.status == 0 && onPath.out.contains("USAGE: gdh-train train"), "\(onPath.err)")
    }
}
