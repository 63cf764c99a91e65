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
            BenchDeletes.self, BenchCompact.self, BenchWrites.self,
        ]
    )
}

// The socket and store benchmarks use no BLAS, but OpenBLAS, loaded with the neural network
// code, starts a worker per core that spins for a while (sched_yield): on the daemon's two
// cores that took about 0.15 s of CPU from a 1M ingest. Unless the caller chose, they run
// with one OpenBLAS thread (this process again, with OPENBLAS_NUM_THREADS=1).
if let verb = CommandLine.arguments.dropFirst().first,
   ["search", "socket", "ingest", "soak", "deletes", "compact", "writes"].contains(verb) {
    Siblings.reexecSelf(setting: "OPENBLAS_NUM_THREADS", to: "1")
}
GDHBench.main()
