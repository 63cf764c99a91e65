import Testing
import HammingCode
@testable import HashStore

/// KeyIndex against a Dictionary: inserts past several rehashes, removes (tombstones), keys
/// added again under new ids, empty and long keys, and look-ups of absent keys.
@Suite("KeyIndex against a dictionary")
struct KeyIndexTests {
    @Test("random inserts, removes and look-ups agree with a dictionary", arguments: [1, 2, 3])
    func againstDictionary(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let keys = KeyIndex()
        var oracle: [String: UInt32] = [:]
        var keyOfID: [UInt32: String] = [:]
        var next: UInt32 = 0
        // A small key space, so that removes and re-adds hit the same keys often.
        func randomKey() -> String {
            let n = Int(rng.next() % 3000)
            switch n % 7 {
            case 0: return "k\(n)"
            case 1: return String(repeating: "x", count: 200) + "\(n)"   // past a small string
            case 2: return "ключ-\(n)"                                      // not ASCII
            default: return "item-\(n)-\(n * 7919)"
            }
        }
        for step in 0..<40_000 {
            let key = randomKey()
            switch rng.next() % 4 {
            case 0, 1:
                if oracle[key] == nil {
                    keys.insert(key.utf8, id: next)
                    oracle[key] = next
                    keyOfID[next] = key
                    next += 1
                }
            case 2:
                #expect(keys.remove(key.utf8) == oracle.removeValue(forKey: key), "remove \(key) at step \(step)")
            default:
                #expect(keys.lookup(key) == oracle[key], "lookup \(key) at step \(step)")
                #expect(keys.lookup(Array(key.utf8)[...]) == oracle[key])
            }
        }
        #expect(keys.count == oracle.count)
        for (key, id) in oracle {
            #expect(keys.lookup(key) == id)
            #expect(keys.key(id) == key)
        }
        // Every id keeps naming its key after a remove; only live ids resolve as live.
        for (id, key) in keyOfID {
            let had = keys.withKeyBytes(ofAnyID: id) { String(decoding: $0, as: UTF8.self) }
            #expect(had == key)
            #expect((keys.key(id) != nil) == (oracle[key] == id))
        }
        #expect(keys.lookup("never-added") == nil)
    }

    @Test("reserve(n) makes room for n inserts: the address hints give stays the table's, and every key is found")
    func reserveKeepsHints() {
        let keys = KeyIndex()
        var next: UInt32 = 0
        for n in [1, 700, 5_000, 40_000] {
            keys.reserve(n)
            let before = keys.hints
            for _ in 0..<n {
                keys.insert("r\(next)".utf8, id: next)
                next += 1
            }
            #expect(keys.hints.slots == before.slots && keys.hints.mask == before.mask)
        }
        for id in 0..<next { #expect(keys.lookup("r\(id)") == id) }
        #expect(keys.lookup("r\(next)") == nil)
    }

    @Test("the empty key is a key like any other")
    func emptyKey() {
        let keys = KeyIndex()
        #expect(keys.lookup("") == nil)
        keys.insert("".utf8, id: 0)
        keys.insert("a".utf8, id: 1)
        #expect(keys.lookup("") == 0)
        #expect(keys.lookup("a") == 1)
        #expect(keys.remove("".utf8) == 0)
        #expect(keys.lookup("") == nil)
        #expect(keys.lookup("a") == 1)
    }
}

@Suite("BatchKeys against a dictionary")
struct BatchKeysTests {
    @Test("random sets and look-ups over batches agree with a dictionary, also when tags collide", arguments: [1, 2])
    func againstDictionary(seed: UInt64) {
        var batch = BatchKeys()
        var rng = seed &* 0x9E37_79B9_7F4A_7C15
        func next(_ n: UInt64) -> UInt64 {
            rng = rng &+ 0x9E37_79B9_7F4A_7C15
            var z = rng
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return (z ^ (z >> 31)) % n
        }
        for round in 0..<20 {
            let writes = Int(next(300)) + 1
            batch.reset(for: writes)
            var oracle: [String: UInt32?] = [:]
            for _ in 0..<writes {
                let key = "key-\(next(UInt64(writes)))"
                // Half the rounds give every key one of two hashes: the tags collide and
                // the strings must tell the keys apart.
                let h = round % 2 == 0 ? KeyIndex.hash(key.utf8) : stableHash(key)
                #expect(batch.state(of: key, hash: h) == oracle[key])
                let id: UInt32? = next(4) == 0 ? nil : UInt32(next(1000))
                batch.set(key, hash: h, id)
                oracle[key] = .some(id)
            }
            for (key, id) in oracle {
                let h = round % 2 == 0 ? KeyIndex.hash(key.utf8) : stableHash(key)
                #expect(batch.state(of: key, hash: h) == .some(id))
            }
            #expect(batch.state(of: "absent", hash: KeyIndex.hash("absent".utf8)) == nil)
        }
    }

    /// A hash with only two values per key set: the same key always gets the same one.
    private func stableHash(_ key: String) -> UInt64 {
        KeyIndex.hash(key.utf8) & 1 == 0 ? 0x1234_5678_0000_0001 : 0x1234_5678_0000_0002
    }
}
