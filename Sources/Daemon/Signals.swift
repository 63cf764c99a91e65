import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Calls `handler` once on SIGTERM or SIGINT (on a background queue), instead of
/// the default of dying mid-write. Kept out of `main.swift` so the handler is not
/// bound to the main actor.
public final class SignalWatcher: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "gdhd.signals")

    /// SIGHUP (a closed terminal) is ignored: the daemon keeps serving.
    public init(_ handler: @escaping @Sendable (Int32) -> Void) {
        signal(SIGHUP, SIG_IGN)
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { handler(sig) }
            source.resume()
            sources.append(source)
        }
    }
}
