import ArgumentParser
import Foundation
import GDHClient
import GDHCommandLine
import WireProtocol

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
        let files: [String]
        do {
            files = try ImageRequests.files(under: root, extensions: Set(extensions.lowercased().split(separator: ",").map(String.init)))
        } catch { throw Failure("\(error)") }
        // Keys must be valid protocol keys; report the rest.
        let candidates = files.filter { RequestParser.keyProblem($0) == nil }
        let skippedBadKey = files.count - candidates.count
        let todo = try absentKeys(candidates)
        let present = candidates.count - todo.count
        let start = Date()
        let failures = try add(todo, root: root)
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

    /// The keys not in the database yet (pipelined GETs on one connection).
    func absentKeys(_ keys: [String]) throws -> [String] {
        let probe = try connection.connect()
        for k in keys { probe.send(Command.get(key: k).requestLine) }
        try probe.flush()
        var absent: [String] = []
        for k in keys {
            if case .error(let code, _) = try probe.receive(), code == ErrorCode.notFound.rawValue { absent.append(k) }
        }
        return absent
    }

    /// Adds the images over `parallel` connections, with a progress bar; the failures, one line each.
    func add(_ keys: [String], root: String) throws -> [String] {
        var progress = ProgressBar(total: keys.count, label: "add-images")
        let lock = NSLock()
        nonisolated(unsafe) var done = 0, failures: [String] = []
        nonisolated(unsafe) var connectError: String?
        let socketPath = connection.socketPath
        let sendInline = inline, parallel = self.parallel
        DispatchQueue.concurrentPerform(iterations: parallel) { worker in
            guard let client = try? LineClient(socketPath: socketPath) else {
                lock.lock(); connectError = "cannot connect to \(socketPath)"; lock.unlock()
                return
            }
            for i in stride(from: worker, to: keys.count, by: parallel) {
                let key = keys[i]
                guard let command = ImageRequests.add(key: key, path: root + "/" + key, inline: sendInline) else {
                    lock.lock(); failures.append("\(key): cannot read"); lock.unlock()
                    continue
                }
                let r = try? client.request(command.requestLine)
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
        return failures
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

    func validate() throws { try validateK(k) }

    func run() throws {
        guard let data = FileManager.default.contents(atPath: sketch) else { throw fail("cannot read \(sketch)") }
        let source: CodeSource = image ? .image64(data.base64EncodedString()) : .sketch64(data.base64EncodedString())
        guard let neighbors = Neighbor.list(try roundTrip(connection, .knn(k: k, query: source))) else { return }
        let results = QueryResult.resolve(neighbors, root: root)
        if json {
            printJSON(["query": sketch, "count": results.count,
                       "results": results.map { ["key": $0.key, "distance": $0.distance, "path": $0.path ?? NSNull()] as [String: Any] }])
        } else {
            for r in results { print("\(r.key) \(r.distance)" + (r.path.map { " \($0)" } ?? "")) }
        }
        if let html {
            do { try QueryResult.page(queryName: sketch, query: data, results: results).write(toFile: html, atomically: true, encoding: .utf8) } catch {
                throw fail("cannot write \(html): \(error)")
            }
        }
    }
}
