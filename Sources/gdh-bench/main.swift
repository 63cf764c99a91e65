import ArgumentParser
import GDHCommandLine

/// Every benchmark of gdh-index (gdh bench ARGS runs gdh-bench ARGS): in process on the
/// search index and the store, over the socket against a running gdhd, and of the
/// neural networks.
struct GDHBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gdh-bench",
        abstract: Siblings.abstract(of: "bench"),
        discussion: """
        Run as gdh-bench or as gdh bench. Tools/bench_search.py, Tools/bench_socket.py and \
        Tools/bench_networks.py run these beside their peers (FAISS, PyTorch) in one run.
        """,
        subcommands: [
            BenchSearch.self, BenchSocket.self, BenchIngest.self, BenchSoak.self,
            BenchEncode.self, BenchTrain.self, BenchDepthwise.self,
            BenchDeletes.self, BenchCompact.self,
        ]
    )
}

GDHBench.main()
