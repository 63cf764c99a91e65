import ArgumentParser
import GDHCommandLine

/// The name of a verb of `Siblings.verbs`, as a type, so that each verb can be its own
/// subcommand type in `gdh --help`.
protocol SiblingVerbName {
    static var name: String { get }
}

enum SynthVerb: SiblingVerbName { static let name = "synth" }
enum TrainVerb: SiblingVerbName { static let name = "train" }
enum EvalVerb: SiblingVerbName { static let name = "eval" }
enum BenchVerb: SiblingVerbName { static let name = "bench" }
enum InspectVerb: SiblingVerbName { static let name = "inspect" }
enum DumpVerb: SiblingVerbName { static let name = "dump" }

/// The placeholder of a verb that a sibling executable runs: it gives `gdh --help` the
/// verb and its abstract. main.swift hands the verb to the sibling before parsing, so
/// these are parsed only if that did not happen; then they hand it on all the same.
struct SiblingCommand<V: SiblingVerbName>: ParsableCommand {
    static var sibling: SiblingVerb {
        Siblings.verb(V.name) ?? SiblingVerb(verb: V.name, executable: "gdh-" + V.name, passesVerb: true, abstract: "")
    }

    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: sibling.verb,
            abstract: sibling.abstract,
            discussion: "Run by the \(sibling.executable) executable (beside gdh or on PATH): see gdh \(sibling.verb) --help."
        )
    }

    @Argument(parsing: .captureForPassthrough, help: "The arguments of the verb.")
    var arguments: [String] = []

    func run() throws {
        Siblings.execIfSiblingVerb([Self.sibling.verb] + arguments)
    }
}
