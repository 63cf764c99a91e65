// swift-tools-version: 6.1
import PackageDescription

// Hardware popcount for the Swift side (`nonzeroBitCount`); the C kernels pick
// AVX-512 VPOPCNTDQ at run time where the CPU has it.
// Release builds also drop the run-time exclusivity checks (swift_beginAccess on every
// class property access was ~5% of the daemon's ingest time); debug builds, and so the
// tests, keep them.
let popcnt: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-mpopcnt"]),
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "gdh-index",
    // Linux only (Glibc, epoll through NIO, /proc, SO_PEERCRED, the codec and OpenBLAS
    // system packages from Debian): no other platform is claimed.
    products: [
        .executable(name: "gdhd", targets: ["gdhd"]),
        .executable(name: "gdh", targets: ["gdh"]),
        .executable(name: "gdh-train", targets: ["gdh-train"]),
        .executable(name: "gdh-bench", targets: ["gdh-bench"]),
        .executable(name: "gdh-db", targets: ["gdh-db"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .target(
            name: "CHammingKernels",
            cSettings: [.unsafeFlags(["-O3", "-mpopcnt"])]
        ),
        .target(name: "HammingCode", dependencies: ["CHammingKernels"], swiftSettings: popcnt),
        .target(name: "MultiIndex", dependencies: ["HammingCode", "CHammingKernels"], swiftSettings: popcnt),
        .target(name: "HashStore", dependencies: ["CLMDB", "CHammingKernels", "HammingCode", "MultiIndex"], swiftSettings: popcnt),
        .target(name: "WireProtocol", dependencies: ["HammingCode"], swiftSettings: popcnt),
        .target(
            name: "CImageCodecs",
            linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("jpeg")]
        ),
        .target(name: "ImageIO", dependencies: ["CImageCodecs"], swiftSettings: popcnt),
        .target(
            name: "CNeuralKernels",
            cSettings: [.unsafeFlags(["-O3"])],
            linkerSettings: [.linkedLibrary("m")]
        ),
        .target(name: "NeuralNet", dependencies: ["COpenBLAS", "CNeuralKernels"], swiftSettings: popcnt),
        .target(name: "GDH", dependencies: ["NeuralNet", "Safetensors", "HammingCode", "ImageIO"], swiftSettings: popcnt),
        .target(name: "GDHClient", dependencies: ["WireProtocol"], swiftSettings: popcnt),
        // What the command-line executables share: the verbs gdh hands to its siblings
        // (gdh-train, gdh-bench, gdh-db), socket options, failures, JSON output, progress.
        // No neural network, OpenBLAS or LMDB code, so that gdh stays a thin client.
        .target(
            name: "GDHCommandLine",
            dependencies: ["GDHClient", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: popcnt
        ),
        // Dataset layouts, splits, the image cache and the synthetic data generator.
        .target(name: "Datasets", dependencies: ["ImageIO", "HammingCode"], swiftSettings: popcnt),
        // Retrieval metrics, SVG plots, the HOG + ITQ baseline and the evaluation of a model.
        .target(name: "Evaluation", dependencies: ["Datasets", "GDH", "MultiIndex", "HammingCode", "ImageIO", "NeuralNet", "COpenBLAS"], swiftSettings: popcnt),
        // The GDH trainer: losses, target codes, the training loop, checkpoints.
        .target(name: "Training", dependencies: ["GDH", "NeuralNet", "Datasets", "Evaluation", "Safetensors", "HammingCode", "ImageIO"], swiftSettings: popcnt),
        .target(name: "Safetensors", swiftSettings: popcnt),
        .target(
            name: "Daemon",
            dependencies: [
                "HashStore", "MultiIndex", "WireProtocol", "HammingCode", "GDH", "ImageIO", "NeuralNet",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: popcnt
        ),
        .executableTarget(
            name: "gdhd",
            dependencies: [
                "Daemon", "HammingCode",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: popcnt
        ),
        // The client: links no OpenBLAS, LMDB or neural network code (a test reads its
        // dynamic dependencies and symbols); train, eval, synth and bench run in siblings.
        .executableTarget(
            name: "gdh",
            dependencies: [
                "GDHCommandLine", "GDHClient", "WireProtocol", "HammingCode",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: popcnt
        ),
        // gdh train, gdh eval, gdh synth.
        .executableTarget(
            name: "gdh-train",
            dependencies: [
                "GDHCommandLine", "Datasets", "Evaluation", "Training", "GDH", "NeuralNet", "HammingCode",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: popcnt
        ),
        // `gdh inspect` and `gdh dump`: a database read without a daemon (the `gdh` client
        // runs this executable for them, so that it links neither LMDB nor OpenBLAS).
        .executableTarget(
            name: "gdh-db",
            dependencies: [
                "HashStore", "MultiIndex", "HammingCode", "GDHClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: popcnt
        ),
        // Every benchmark (gdh bench runs it): in-process search, store maintenance, the
        // socket benches, encoders and training steps.
        .executableTarget(
            name: "gdh-bench",
            dependencies: [
                "GDHCommandLine", "GDHClient", "WireProtocol", "HammingCode", "MultiIndex", "HashStore", "GDH", "NeuralNet", "Safetensors", "Training",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: popcnt
        ),
        .testTarget(
            name: "NeuralNetTests",
            dependencies: ["NeuralNet", "HammingCode", "Safetensors"],
            exclude: ["Fixtures"],
            swiftSettings: popcnt
        ),
        .testTarget(
            name: "GDHTests",
            dependencies: ["GDH", "NeuralNet", "Safetensors", "HammingCode", "ImageIO"],
            exclude: ["Fixtures"],
            swiftSettings: popcnt
        ),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "ImageIO"], swiftSettings: popcnt),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "Datasets", "MultiIndex", "HammingCode", "GDH", "ImageIO"], swiftSettings: popcnt),
        .testTarget(
            name: "TrainingTests",
            dependencies: ["Training", "GDH", "NeuralNet", "Datasets", "Evaluation", "Safetensors"],
            exclude: ["Fixtures"],
            swiftSettings: popcnt
        ),
        .testTarget(name: "HammingCodeTests", dependencies: ["HammingCode"], swiftSettings: popcnt),
        .testTarget(name: "MultiIndexTests", dependencies: ["MultiIndex", "HammingCode"], swiftSettings: popcnt),
        .testTarget(name: "HashStoreTests", dependencies: ["HashStore", "MultiIndex", "HammingCode"], swiftSettings: popcnt),
        .testTarget(name: "WireProtocolTests", dependencies: ["WireProtocol", "HammingCode"], swiftSettings: popcnt),
        .testTarget(name: "ImageIOTests", dependencies: ["ImageIO", "HammingCode"], exclude: ["Fixtures"], swiftSettings: popcnt),
        .testTarget(name: "SafetensorsTests", dependencies: ["Safetensors", "HammingCode"], exclude: ["Fixtures"], swiftSettings: popcnt),
        // The sibling table and, by running the built executables, gdh's help, exit codes
        // and dynamic dependencies.
        .testTarget(name: "GDHCommandLineTests", dependencies: ["GDHCommandLine"], swiftSettings: popcnt),
        .testTarget(name: "GDHClientTests", dependencies: ["GDHClient", "WireProtocol", "HammingCode"], swiftSettings: popcnt),
        .testTarget(
            name: "DaemonTests",
            dependencies: [
                "Daemon", "WireProtocol", "HammingCode", "HashStore", "MultiIndex", "GDHClient", "GDH", "NeuralNet", "Safetensors", "ImageIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: popcnt
        ),
    ],
    swiftLanguageModes: [.v5]
)
