/// One line of a KNN or RANGE answer, `<key> <distance>`: what
/// `ResponseFormatter.writeNeighborLine` writes, read back.
public struct Neighbor: Equatable, Hashable, Sendable {
    public var key: String
    public var distance: Int

    public init(key: String, distance: Int) {
        self.key = key
        self.distance = distance
    }

    /// Parses `<key> <distance>` (without `\n`). Keys never hold a space, so the line
    /// splits at its first one. Nil when there is no space or the distance is not a
    /// decimal integer.
    public init?(line: some StringProtocol) {
        guard let space = line.firstIndex(of: " "),
              let d = Int(line[line.index(after: space)...]) else { return nil }
        self.init(key: String(line[..<space]), distance: d)
    }

    /// The neighbours of a KNN or RANGE answer, in order; a line that does not parse keeps
    /// its text as the key and distance -1. Nil for an answer that is not a list.
    public static func list(_ response: Response) -> [Neighbor]? {
        guard case .list(let lines) = response else { return nil }
        return lines.map { Neighbor(line: $0) ?? Neighbor(key: $0, distance: -1) }
    }
}
