import ArgumentParser
import Foundation
import HammingCode

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write synthetic `key hex` lines (for `gdh import`, demos and tests).",
        discussion: """
        random: uniform bits. clustered: each code is one of --centres random centres with
        every bit flipped with probability --flip, like the codes a learned hash gives
        similar images. Keys are <prefix><number>; with clustered codes the prefix is
        followed by the centre: c17-42 is code 42, from centre 17.
        """
    )
    @Option(help: "How many codes.") var n: Int = 100_000
    @Option(help: "Code width.") var bits: Int = 64
    @Option(help: "random or clustered.") var kind: String = "clustered"
    @Option(help: "Clustered: number of centres.") var centres: Int = 1000
    @Option(help: "Clustered: probability that a bit is flipped.") var flip: Double = 0.08
    @Option(help: "Seed of the codes (the centres depend only on the width and their count).") var seed: UInt64 = 1
    @Option(help: "Key prefix.") var prefix: String = "c"

    func validate() throws {
        _ = try CodeWidth(bits: bits)
        guard n >= 0 else { throw ValidationError("--n must not be negative") }
        guard kind == "random" || kind == "clustered" else { throw ValidationError("--kind is random or clustered") }
        guard centres >= 1, (0...1).contains(flip) else { throw ValidationError("--centres ≥ 1 and 0 ≤ --flip ≤ 1") }
    }

    func run() throws {
        let width = try CodeWidth(bits: bits)
        var codes = SyntheticCodes(width: width, kind: kind == "clustered" ? .clustered(centres: centres, flip: flip) : .random, seed: seed)
        var out = ""
        out.reserveCapacity(1 << 20)
        let stdout = FileHandle.standardOutput
        for i in 0..<n {
            let (code, centre) = codes.next()
            out += "\(prefix)\(centre.map { "\($0)-" } ?? "")\(i) \(code.hex)\n"
            if out.utf8.count >= 1 << 20 {
                stdout.write(Data(out.utf8))
                out.removeAll(keepingCapacity: true)
            }
        }
        stdout.write(Data(out.utf8))
    }
}
