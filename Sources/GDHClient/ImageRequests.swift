import Foundation
import WireProtocol

/// What `gdh add-images` and `gdh query` do besides talking to the socket: finding image
/// files, the ADD for one, and the page of a query's results.
public enum ImageRequests {
    /// Image files under a directory, recursively, as paths relative to it, sorted;
    /// `extensions` in lower case, without the dot.
    public static func files(under root: String, extensions: Set<String>) throws -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: root) else { throw ClientError("cannot read directory \(root)") }
        var out: [String] = []
        while let rel = walker.nextObject() as? String {
            if extensions.contains((rel as NSString).pathExtension.lowercased()) { out.append(rel) }
        }
        return out.sorted()
    }

    /// The ADD of the image at `path` under `key`: by path (the daemon reads it under its
    /// allowed roots), or inline as base64 when asked or when the path holds a space
    /// (tokens are separated by spaces). Nil when an inline image cannot be read.
    public static func add(key: String, path: String, inline: Bool) -> Command? {
        guard inline || path.contains(" ") else { return .add(key: key, from: .image(path: path)) }
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return .add(key: key, from: .image64(data.base64EncodedString()))
    }
}

/// One result of `gdh query`: a neighbour and, when it exists, the file its key names.
public struct QueryResult: Equatable, Sendable {
    public var key: String
    public var distance: Int
    /// `root/key` (or the key itself without a root) when that file exists.
    public var path: String?

    public init(key: String, distance: Int, path: String?) {
        self.key = key
        self.distance = distance
        self.path = path
    }

    /// The neighbours with the files their keys name under `root`.
    public static func resolve(_ neighbors: [Neighbor], root: String?) -> [QueryResult] {
        neighbors.map { n in
            let candidate = root.map { $0 + "/" + n.key } ?? n.key
            return QueryResult(key: n.key, distance: n.distance,
                               path: FileManager.default.fileExists(atPath: candidate) ? candidate : nil)
        }
    }

    /// An HTML page with the query image and the results as thumbnails (inline data URIs,
    /// so the page stands alone); a result without a file gets an empty frame.
    public static func page(queryName: String, query: Data, results: [QueryResult]) -> String {
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        func dataURI(_ d: Data, _ name: String) -> String {
            let mime = name.lowercased().hasSuffix(".png") ? "image/png" : "image/jpeg"
            return "data:\(mime);base64,\(d.base64EncodedString())"
        }
        var page = """
        <!doctype html><html><head><meta charset="utf-8"><title>gdh query: \(escape(queryName))</title>
        <style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:.5em;text-align:center}
        img{width:160px;height:160px;object-fit:contain;border:1px solid #ccc;background:#fff}
        figcaption{font-size:12px;max-width:160px;overflow-wrap:anywhere}.q img{border:2px solid #36c}</style></head><body>
        <h1>Nearest images</h1><figure class="q"><img src="\(dataURI(query, queryName))" alt="query"><figcaption>query: \(escape(queryName))</figcaption></figure><hr>

        """
        for r in results {
            let img = r.path.flatMap { p in FileManager.default.contents(atPath: p).map { dataURI($0, p) } }
            page += "<figure>" + (img.map { "<img src=\"\($0)\" alt=\"\(escape(r.key))\">" } ?? "<div style=\"width:160px;height:160px;border:1px dashed #ccc\"></div>")
            page += "<figcaption>\(escape(r.key))<br>distance \(r.distance)</figcaption></figure>\n"
        }
        page += "</body></html>\n"
        return page
    }
}
