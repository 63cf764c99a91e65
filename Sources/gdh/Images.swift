import ArgumentParser
import Foundation
import GDHClient
import GDHCommandLine
import WireProtocol

/// Image files under a directory, recursively, in path order.
func imageFiles(under root: String, extensions: Set<String>) throws -> [String] {
    guard let walker = FileManager.default.enumerator(atPath: root) else { throw Failure("cannot read directory \(root)") }
    var out: [String] = []
    while let rel = walker.nextObject() as? String {
        if extensions.contains((rel as NSString).pathExtension.lowercased()) { out.append(rel) }
    }
    return out.sorted()
}

struct AddImages: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-images",
        abstract: "Add every image under a directory (recursively); keys are the paths relative to it.",
        discussion: """
        Keys already in the database are skipped. Images are sent by path (the daemon must
        be started with --allow-root covering DIR) or, with --inline or for paths that
        contain spaces, as base64. Several connections work at once so that the daemon
        encodes in parallel. Prints a summary; a progress bar on a terminal.
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The directory of images.") var directory: String
    @Option(help: "File extensions to take, comma-separated.") var extensions: String = "png,jpg,jpeg"
    @Option(help: "Connections used at once.") var parallel: Int = 2
    @Flag(help: "Send the image bytes (IMAGE64) instead of paths.") var inline = false
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard (1...16).contains(parallel) else { throw ValidationError("--parallel must be 1 to 16") }
    }

    func run() throws {
        guard let root = canonicalPath(directory) else { throw fail("cannot read directory \(directory)") }
        let files = try imageFiles(under: root, extensions: Set(extensions.lowercased().split(separator: ",").map(String.init)))
        // Keys must be valid protocol keys; report the rest.
        var skippedBadKey = 0
        let candidates = files.filter { rel in
            let ok = (try? validateKey(rel)) != nil
            if !ok { skippedBadKey += 1 }
            return ok
        }
        // Which keys are present already (pipelined GETs on one connection).
        let probe = try connection.connect()
        for k in candidates { probe.send("GET \(k)") }
        try probe.flush()
        var todo: [String] = []
        for k in candidates {
            if case .error(let code, _) = try probe.receive(), code == "NOTFOUND" { todo.append(k) }
        }
        let present = candidates.count - todo.count
        var progress = ProgressBar(total: todo.count, label: "add-images")
        let lock = NSLock()
        nonisolated(unsafe) var done = 0, failures: [String] = []
        nonisolated(unsafe) var connectError: String?
        let start = Date()
        let socketPath = connection.socketPath
        let sendInline = inline
        DispatchQueue.concurrentPerform(iterations: parallel) { worker in
            guard let client = try? LineClient(socketPath: socketPath) else {
                lock.lock(); connectError = "cannot connect to \(socketPath)"; lock.unlock()
                return
            }
            for i in stride(from: worker, to: todo.count, by: parallel) {
                let key = todo[i], path = root + "/" + key
                let line: String
                if sendInline || path.contains(" ") {
                    guard let data = FileManager.default.contents(atPath: path) else {
                        lock.lock(); failures.append("\(key): cannot read"); lock.unlock()
                        continue
                    }
                    line = "ADD \(key) IMAGE64 \(data.base64EncodedString())"
                } else {
                    line = "ADD \(key) IMAGE \(path)"
                }
                let r = try? client.request(line)
                lock.lock()
                done += 1
                if case .error(let code, let message)? = r { failures.append("\(key): ERR \(code) \(message)") }
                if r == nil { failures.append("\(key): the connection failed") }
                progress.update(done)
                lock.unlock()
            }
        }
        progress.update(done, force: true)
        progress.finish()
        if let connectError { throw fail(connectError) }
        let seconds = Date().timeIntervalSince(start)
        let added = todo.count - failures.count
        if json {
            printJSON(["added": added, "already_present": present, "failed": failures.count, "skipped_keys": skippedBadKey,
                       "seconds": seconds, "images_per_second": Double(added) / max(seconds, 1e-9)])
        } else {
            print(String(format: "added %d images in %.1f s (%.1f/s); %d already present; %d failed; %d skipped (bad key)",
                         added, seconds, Double(added) / max(seconds, 1e-9), present, failures.count, skippedBadKey))
        }
        if !failures.isEmpty {
            for f in failures.prefix(10) { FileHandle.standardError.write(Data("gdh: \(f)\n".utf8)) }
            throw fail("\(failures.count) images were not added")
        }
    }
}

struct Query: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the images nearest to a sketch (or, with --image, to a photo).",
        discussion: """
        Sends the file inline (SKETCH64), so the daemon needs no access to it. Prints
        `key distance path` lines (path: --root joined with the key, when that file
        exists), or JSON; --html writes a page with the sketch and its results as thumbnails.
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The sketch (PNG or JPEG).") var sketch: String
    @Option(name: .short, help: "How many results.") var k: Int = 10
    @Flag(help: "Treat the file as a photo (image-to-image search).") var image = false
    @Option(help: "The directory the keys are relative to (as given to add-images).") var root: String?
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Write an HTML page of the results to this file.") var html: String?

    func validate() throws {
        guard (1...1_000_000).contains(k) else { throw ValidationError("-k must be 1 to 1000000") }
    }

    func run() throws {
        guard let data = FileManager.default.contents(atPath: sketch) else { throw fail("cannot read \(sketch)") }
        let word = image ? "IMAGE64" : "SKETCH64"
        guard case .list(let lines) = try roundTrip(connection, "KNN \(k) \(word) \(data.base64EncodedString())") else { return }
        let results: [(key: String, distance: Int, path: String?)] = lines.map { line in
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            let key = parts.first ?? "", d = Int(parts.count > 1 ? parts[1] : "") ?? -1
            let candidate = root.map { $0 + "/" + key } ?? key
            return (key, d, FileManager.default.fileExists(atPath: candidate) ? candidate : nil)
        }
        if json {
            printJSON(["query": sketch, "count": results.count,
                       "results": results.map { ["key": $0.key, "distance": $0.distance, "path": $0.path ?? NSNull()] as [String: Any] }])
        } else {
            for r in results { print("\(r.key) \(r.distance)" + (r.path.map { " \($0)" } ?? "")) }
        }
        if let html {
            try writeHTML(to: html, query: data, results: results)
        }
    }

    func writeHTML(to path: String, query: Data, results: [(key: String, distance: Int, path: String?)]) throws {
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        func dataURI(_ d: Data, _ name: String) -> String {
            let mime = name.lowercased().hasSuffix(".png") ? "image/png" : "image/jpeg"
            return "data:\(mime);base64,\(d.base64EncodedString())"
        }
        var page = """
        <!doctype html><html><head><meta charset="utf-8"><title>gdh query: \(escape(sketch))</title>
        <style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:.5em;text-align:center}
        img{width:160px;height:160px;object-fit:contain;border:1px solid #ccc;background:#fff}
        figcaption{font-size:12px;max-width:160px;overflow-wrap:anywhere}.q img{border:2px solid #36c}</style></head><body>
        <h1>Nearest images</h1><figure class="q"><img src="\(dataURI(query, sketch))" alt="query"><figcaption>query: \(escape(sketch))</figcaption></figure><hr>

        """
        for r in results {
            let img = r.path.flatMap { p in FileManager.default.contents(atPath: p).map { dataURI($0, p) } }
            page += "<figure>" + (img.map { "<img src=\"\($0)\" alt=\"\(escape(r.key))\">" } ?? "<div style=\"width:160px;height:160px;border:1px dashed #ccc\"></div>")
            page += "<figcaption>\(escape(r.key))<br>distance \(r.distance)</figcaption></figure>\n"
        }
        page += "</body></html>\n"
        do { try page.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw fail("cannot write \(path): \(error)")
        }
    }
}
