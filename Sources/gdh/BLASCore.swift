import Foundation

/// OpenBLAS 0.3.21 (Debian 12) does not recognise some recent CPUs and falls back to its
/// Prescott (SSE3) kernels, which made training steps 1.4x slower here. It reads
/// OPENBLAS_CORETYPE only when it is loaded, so the training commands re-execute
/// themselves once with the best core type the CPU supports when the variable is unset
/// (set it yourself to choose; GDH_NO_BLAS_REEXEC=1 turns this off).
enum BLASCoreType {
    static func reexecIfNeeded() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["GDH_NO_BLAS_REEXEC"] == nil,
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        let core: String
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) { core = "SkylakeX" } else if flags.contains("avx2") && flags.contains("fma") { core = "Haswell" } else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        let args = CommandLine.arguments
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return }
        var cArgs = args.map { strdup($0) } + [nil]
        execv(exe, &cArgs)
        // execv returned: carry on with the kernels OpenBLAS chose.
    }
}
