import Foundation

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

    /// The core type the training commands re-execute themselves with
    /// (`Siblings.reexecSelf(setting: "OPENBLAS_CORETYPE", to:)`): `best(cpuFlags:)` for
    /// this CPU, or nil when OPENBLAS_CORETYPE or GDH_NO_BLAS_REEXEC is set or there is
    /// nothing better to choose.
    public static func wantedForThisCPU() -> String? {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["GDH_NO_BLAS_REEXEC"] == nil,
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        return best(cpuFlags: Set(flagsLine.split(separator: " ").map(String.init)))
    }
}
