import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS 0.3.21 (Debian 12) does not recognise some recent CPUs and falls back to its
/// Prescott (SSE3) kernels, which made training steps 1.4x slower here. It reads
/// OPENBLAS_CORETYPE only when it is loaded, so the training commands (`gdh train`,
/// `gdh bench train`) re-execute themselves once with the best core type the CPU supports
/// when the variable is unset (set it yourself to choose; GDH_NO_BLAS_REEXEC=1 turns this off).
public enum BLASCoreType {
    /// The OpenBLAS core type for a CPU with these /proc/cpuinfo flags, or nil to leave
    /// OpenBLAS's own choice.
    public static func best(cpuFlags flags: Set<String>) -> String? {
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) { return "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }

    /// Re-executes this process (/proc/self/exe, same arguments) with OPENBLAS_CORETYPE
    /// set to `best(cpuFlags:)`, unless the variable or GDH_NO_BLAS_REEXEC is set or there
    /// is nothing better to choose. Returns only when it did not re-execute.
    public static func reexecIfNeeded() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["GDH_NO_BLAS_REEXEC"] == nil,
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let core = best(cpuFlags: Set(flagsLine.split(separator: " ").map(String.init))) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return }
        var cArgs = CommandLine.arguments.map { strdup($0) } + [nil]
        execv(exe, &cArgs)
        // execv returned: carry on with the kernels OpenBLAS chose.
    }
}
