import CHammingKernels

/// Which popcount kernel the linear scans of CHammingKernels run (STATS' `scan_kernel`):
/// `avx512` (AVX-512 VPOPCNTDQ) where the CPU has it, else `popcnt`; the environment
/// variable GDH_SCALAR_KERNELS=1 forces `popcnt`.
public enum ScanKernel {
    public static var name: String { gdh_kernels_vectorised() == 1 ? "avx512" : "popcnt" }
}
