import NeuralNet
import Testing

@Suite("OpenBLAS core type chosen from the CPU's flags")
struct BLASCoreTypeTests {
    @Test("AVX-512 (F, BW, VL, DQ) gives SkylakeX, AVX2 with FMA Haswell, anything less OpenBLAS's own choice")
    func choice() {
        let avx2: Set<String> = ["sse4_2", "avx", "avx2", "fma", "popcnt"]
        #expect(BLASCoreType.best(cpuFlags: avx2.union(["avx512f", "avx512bw", "avx512vl", "avx512dq"])) == "SkylakeX")
        #expect(BLASCoreType.best(cpuFlags: avx2.union(["avx512f", "avx512bw", "avx512vl"])) == "Haswell")
        #expect(BLASCoreType.best(cpuFlags: avx2) == "Haswell")
        #expect(BLASCoreType.best(cpuFlags: ["sse4_2", "avx", "avx2"]) == nil)
        #expect(BLASCoreType.best(cpuFlags: []) == nil)
    }
}
