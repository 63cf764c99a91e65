import ArgumentParser

/// In-process benchmarks of the store, which need no daemon and no client.
struct GDHBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gdh-bench",
        abstract: "In-process benchmarks of the gdh-index store.",
        subcommands: [BenchDeletes.self, BenchCompact.self]
    )
}

GDHBench.main()
