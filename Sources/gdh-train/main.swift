import ArgumentParser
import GDHCommandLine

/// Training, evaluation and synthetic data: the verbs of gdh that need the neural
/// networks (gdh train ARGS runs gdh-train train ARGS).
struct GDHTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gdh-train",
        abstract: "Train and evaluate GDH models, and write synthetic data sets (gdh synth, train and eval run this).",
        subcommands: [Synth.self, Train.self, Eval.self]
    )
}

GDHTrain.main()
