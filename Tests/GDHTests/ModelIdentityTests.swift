import Foundation
import GDH
import HammingCode
import NeuralNet
import Testing

@Suite("SHA-256")
struct SHA256Tests {
    func hex(_ s: String) -> String { SHA256.hex(SHA256.hash(Array(s.utf8))) }

    @Test("FIPS 180 test vectors")
    func vectors() {
        #expect(hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")
            == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    @Test("a million 'a's, fed in uneven pieces")
    func millionA() {
        var h = SHA256()
        let chunk = [UInt8](repeating: 0x61, count: 1000)
        var left = 1_000_000, i = 0
        while left > 0 {
            let n = min(left, [1, 63, 64, 65, 1000, 7][i % 6])
            h.update(Array(chunk.prefix(n)))
            left -= n
            i += 1
        }
        #expect(SHA256.hex(h.finalize()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test("incremental updates equal one pass, at every split of a message")
    func incremental() {
        let message = (0..<1280).map { UInt8($0 % 256) }
        let whole = SHA256.hash(message)
        #expect(SHA256.hex(whole) == "d414b085826eb06778483ba35564dc849e643359f69ed9747878ba6e54985bed")
        for split in [0, 1, 55, 56, 63, 64, 65, 127, 128, 700, 1279, 1280] {
            var h = SHA256()
            h.update(Array(message[..<split]))
            h.update(Array(message[split...]))
            #expect(h.finalize() == whole, "split at \(split)")
        }
    }
}

@Suite("GDH model identity")
struct ModelIdentityTests {
    static func config() -> GDHConfiguration {
        var c = GDHConfiguration.small(bits: 32)
        c.imageSize = 32
        return c
    }

    /// A training model with random weights in every network.
    static func randomModel(seed: UInt64 = 1) throws -> GDHModel {
        let model = try GDHModel(configuration: config(), training: true)
        var rng = SplitMix64(seed: seed)
        for net in [model.generatorI, model.hashNet, model.generatorS!, model.discriminatorI!, model.discriminatorS!] {
            for (_, p) in net.parameters { Initializer.normal(&p.value, using: &rng) }
        }
        return model
    }

    func temporaryPath() -> String { NSTemporaryDirectory() + "gdh-identity-\(UUID().uuidString).safetensors" }

    @Test("the form is sha256: and 16 hex digits; the same weights give the same identity")
    func form() throws {
        let id = try ModelIdentityTests.randomModel().identity
        #expect(id.hasPrefix("sha256:"))
        #expect(id.dropFirst(7).count == 16)
        #expect(id.dropFirst(7).allSatisfy { "0123456789abcdef".contains($0) })
        #expect(try ModelIdentityTests.randomModel().identity == id)
        #expect(try ModelIdentityTests.randomModel(seed: 2).identity != id)
    }

    @Test("stable across writing and reading the model file")
    func roundTrip() throws {
        let model = try ModelIdentityTests.randomModel()
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try model.write(to: path)
        let back = try GDHModel.read(contentsOf: path)
        #expect(back.identity == model.identity)
        // Writing the read model again changes nothing either.
        try back.write(to: path)
        #expect(try GDHModel.read(contentsOf: path).identity == model.identity)
    }

    @Test("a training file and its inference-only export have the same identity")
    func trainingAndInference() throws {
        let model = try ModelIdentityTests.randomModel()
        let export = try GDHModel(configuration: model.configuration)
        let state = model.stateDict()
        try export.generatorI.load(state, prefix: "G_I.", strict: true)
        try export.hashNet.load(state, prefix: "H.", strict: true)
        let full = temporaryPath(), small = temporaryPath()
        defer {
            try? FileManager.default.removeItem(atPath: full)
            try? FileManager.default.removeItem(atPath: small)
        }
        try model.write(to: full)
        try export.write(to: small)
        let a = try GDHModel.read(contentsOf: full), b = try GDHModel.read(contentsOf: small)
        #expect(a.generatorS != nil && b.generatorS == nil)
        #expect(a.identity == b.identity)
        #expect(a.identity == model.identity)
        // The training networks do not count.
        let (_, p) = model.discriminatorI!.parameters[0]
        p.value.data[0] += 1
        #expect(model.identity == b.identity)
    }

    @Test("any changed inference weight, statistic or setting changes the identity")
    func changes() throws {
        let model = try ModelIdentityTests.randomModel()
        let original = model.identity
        let (_, h) = model.hashNet.parameters[model.hashNet.parameters.count - 1]
        let saved = h.value.data[0]
        h.value.data[0] = saved.nextUp
        let changedH = model.identity
        #expect(changedH != original)
        h.value.data[0] = saved
        #expect(model.identity == original)
        let (_, g) = model.generatorI.parameters[0]
        g.value.data[g.value.count - 1] += 0.5
        #expect(model.identity != original && model.identity != changedH)
        g.value.data[g.value.count - 1] -= 0.5
        // A BatchNorm running statistic is a tensor like the weights.
        let (_, b) = model.hashNet.buffers[0]
        b.value.data[0] += 1
        #expect(model.identity != original)
        b.value.data[0] -= 1
        #expect(model.identity == original)
        // Another configuration (here another resize filter) is another model.
        var other = ModelIdentityTests.config()
        other.resize = .bilinear
        let m2 = try GDHModel(configuration: other)
        let state = model.stateDict()
        try m2.generatorI.load(state, prefix: "G_I.", strict: true)
        try m2.hashNet.load(state, prefix: "H.", strict: true)
        #expect(m2.identity != original)
    }
}

