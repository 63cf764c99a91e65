/// The `name value` lines of a STATS answer read back (`ResponseFormatter.stats`' inverse).
public enum Statistics {
    /// The pairs in order; a line without a space is skipped. Nil for an answer that is
    /// not a list.
    public static func pairs(_ response: Response) -> [(name: String, value: String)]? {
        guard case .list(let lines) = response else { return nil }
        return lines.compactMap { line in
            guard let space = line.firstIndex(of: " ") else { return nil }
            return (String(line[..<space]), String(line[line.index(after: space)...]))
        }
    }

    /// The same as a dictionary (the first of repeated names wins).
    public static func dictionary(_ response: Response) -> [String: String]? {
        pairs(response).map { Dictionary($0.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a }) }
    }
}
