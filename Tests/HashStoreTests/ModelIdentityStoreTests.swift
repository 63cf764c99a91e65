import Foundation
import HammingCode
import Testing
@testable import HashStore

@Suite("HashStore model identity")
struct ModelIdentityStoreTests {
    @Test("recorded by the first image item, kept across reopen and compaction, dropped with the last image item")
    func lifecycle() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 7)
        let w = try CodeWidth(bits: 64)
        do {
            let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
            defer { store.close() }
            #expect(store.modelIdentity == nil && store.imageItems == 0)
            // Hex codes do not depend on a model, whatever model the writer runs.
            _ = try store.apply([.add(key: "hex", code: code(w, &rng))], codesModel: "sha256:aaaaaaaaaaaaaaaa")
            #expect(store.modelIdentity == nil)
            // The first item with a source records the model.
            _ = try store.apply([.add(key: "img", code: code(w, &rng), source: .path("/x/a.png"))], codesModel: "sha256:aaaaaaaaaaaaaaaa")
            #expect(store.modelIdentity == "sha256:aaaaaaaaaaaaaaaa" && store.imageItems == 1)
            // A set identity is not overwritten by writes (REENCODE sets it explicitly).
            _ = try store.apply([.add(key: "img2", code: code(w, &rng), source: .inline([1, 2]))], codesModel: "sha256:bbbbbbbbbbbbbbbb")
            #expect(store.modelIdentity == "sha256:aaaaaaaaaaaaaaaa" && store.imageItems == 2)
            _ = try store.compact()
            #expect(store.modelIdentity == "sha256:aaaaaaaaaaaaaaaa")
        }
        do {
            let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
            defer { store.close() }
            #expect(store.modelIdentity == "sha256:aaaaaaaaaaaaaaaa" && store.imageItems == 2)
            try store.setModelIdentity("sha256:bbbbbbbbbbbbbbbb")
            #expect(store.modelIdentity == "sha256:bbbbbbbbbbbbbbbb")
            // A CODE over an image item drops its source; the last one gone drops the identity.
            _ = try store.apply([.add(key: "img", code: code(w, &rng))])
            #expect(store.modelIdentity == "sha256:bbbbbbbbbbbbbbbb" && store.imageItems == 1)
            _ = try store.apply([.delete(key: "img2")])
            #expect(store.modelIdentity == nil && store.imageItems == 0)
            #expect(store.count == 2)
        }
        do {
            let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
            defer { store.close() }
            #expect(store.modelIdentity == nil)
            // Without a model identity given, nothing is recorded (unknown).
            _ = try store.apply([.add(key: "img3", code: code(w, &rng), source: .path("/x/c.png"))])
            #expect(store.modelIdentity == nil && store.imageItems == 1)
            try store.setModelIdentity("sha256:cccccccccccccccc")
            try store.setModelIdentity(nil)
            #expect(store.modelIdentity == nil)
        }
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        defer { store.close() }
        #expect(store.modelIdentity == nil && store.imageItems == 1)
    }
}
