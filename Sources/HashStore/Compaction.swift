import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// Writes a compacted copy of the database and swaps it in while writes go on.
    ///
    /// 1. Under the writer lock (a moment): the environment starts logging the changes of
    ///    every committed write transaction.
    /// 2. No lock: LMDB copies the database, compacted, from one read transaction into
    ///    `data.mdb.compact`; writes continue. Then the logged changes are replayed on the
    ///    copy in rounds (each a transaction on the copy) until few are left.
    /// 3. Under the writer lock (the pause writes see): the last changes are replayed, the
    ///    copy is synced, renamed over the data file and the directory synced; the
    ///    environment is reopened on it.
    ///
    /// Replaying a change the copy already holds is harmless (every change is a blind
    /// put, delete or empty), so logging may start before the copy's snapshot. A crash at
    /// any point leaves the old file whole (the copy is only a temporary file until the
    /// rename) or the new one complete. The tables are not folded (a fold happens by the
    /// usual thresholds, or with REBUILD). Any thread. Returns the file size before and after.
    public func compact() throws -> (before: Int, after: Int) {
        compactLock.lock()
        defer { compactLock.unlock() }
        let before = HashStore.fileSize(dataPath)
        let tmp = directory + "/data.mdb.compact"
        unlink(tmp)
        let log = ChangeLog()
        var timeline = PauseSteps()
        defer { lastCompactTimeline = timeline.steps }
        let mapSize = try startLogging(to: log)
        timeline.step("logging")
        testPoint("started")
        var copy: Environment?
        var swapped = false
        defer { if !swapped { abandonCompaction(copy: copy, tmp: tmp) } }
        copy = try writeCompactedCopy(to: tmp, mapSize: mapSize)
        timeline.step("copied")
        var target = copy!
        var dbis = try copyDatabases(target)
        testPoint("copied")
        var caughtUp = try catchUp(log, into: target, dbis: dbis)
        timeline.step("caught-up")
        // Unmapping the copy's pages takes tens of ms at 10M items: closed here, outside the
        // pause, and opened again, so that the pause unmaps only what the last replay touched.
        let copyMapSize = target.mapSize
        copy = nil
        target.close()
        copy = try openCopy(tmp, mapSize: copyMapSize)
        target = copy!
        dbis = try copyDatabases(target)
        timeline.step("reopened-copy")
        // What the writes added meanwhile, so that the pause starts from a short log.
        caughtUp += try catchUp(log, into: target, dbis: dbis)
        timeline.step("caught-up-again")
        testPoint("caught-up")
        pauseWaiting.withLock { $0 += 1 }
        writerLock.lock()
        pauseWaiting.withLock { $0 -= 1 }
        defer { writerLock.unlock() }
        var pause = PauseSteps()
        env.log = nil
        let last = try finishCopy(log, into: target, dbis: dbis, copy: &copy, tmp: tmp, &pause)
        unlink(tmp + "-lock")
        testPoint("replayed")
        let swap = swapInCopy(tmp, &pause)
        swapped = swap.renamed
        pause.step("reopen")
        lastCompactSteps = pause.steps
        timeline.step("swapped")
        writerLock.unlock()
        swap.old?.close()
        timeline.step("old-env-closed")
        HashStore.releaseOldFile(oldPath, unlessSameAs: dataPath)
        timeline.step("old-file-freed")
        HashStore.releaseFreeMemory()
        writerLock.lock()
        commits += 1
        lastCompactReplayed = (caughtUp, last)
        if let reopenError = swap.reopenError {
            throw StoreError.storage(reopenError, "cannot reopen the database after compaction", dataPath: dataPath)
        }
        guard swap.renamed else {
            throw StoreError.io("cannot replace the data file: \(String(cString: strerror(swap.renameError)))")
        }
        return (before, HashStore.fileSize(dataPath))
    }

    /// The steps of COMPACT's pause: (name, seconds since the pause began).
    struct PauseSteps {
        let start = DispatchTime.now().uptimeNanoseconds
        var steps: [(String, Double)] = []
        mutating func step(_ name: String) {
            steps.append((name, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
        }
    }

    /// Step 1, under the writer lock for a moment: room ahead in the map, and the
    /// environment starts logging committed changes to `log`. Returns the map size.
    private func startLogging(to log: ChangeLog) throws -> Int {
        writerLock.lock()
        defer { writerLock.unlock() }
        try growMapAhead()
        env.log = log
        return env.mapSize
    }

    /// A COMPACT that did not swap: logging stops (under the writer lock), the copy is
    /// closed and its files removed; the database is unchanged.
    private func abandonCompaction(copy: Environment?, tmp: String) {
        writerLock.lock()
        env.log = nil
        writerLock.unlock()
        copy?.close()
        unlink(tmp)
        unlink(tmp + "-lock")
    }

    /// Step 2, no lock: a packed copy of one snapshot into `tmp` (`writePackedCopy`: every
    /// page full), synced (the bulk of the copy reaches the disk now, not in the pause),
    /// left open without syncing commits (the catch-up syncs it as a whole).
    private func writeCompactedCopy(to tmp: String, mapSize: Int) throws -> Environment {
        do {
            return try envSwap.withReadLock { try writePackedCopy(to: tmp, mapSize: mapSize) }
        } catch {
            throw StoreError.storage(error, "compaction copy failed, the database is unchanged", dataPath: tmp)
        }
    }

    /// Opens the compaction copy without syncing commits (the catch-up and the pause sync
    /// it as a whole).
    private func openCopy(_ tmp: String, mapSize: Int) throws -> Environment {
        do {
            return try Environment(path: tmp, mapSize: mapSize, maxDatabases: HashStore.maxDatabases, noSync: true)
        } catch {
            throw StoreError.storage(error, "compaction copy failed, the database is unchanged", dataPath: tmp)
        }
    }

    /// Step 2, no lock: replays the logged changes on the copy while writes go on, until
    /// little is left for the pause (a round takes about as long as the writes it replays
    /// took to arrive, so the rounds shrink), then syncs the copy, and replays again what
    /// the writes added during that sync (without syncing: the pause's sync covers it; up
    /// to five times more sync and replay while a sync let 512 changes or more gather),
    /// so that the pause replays and syncs only the writes of the last short round.
    /// Returns the changes replayed.
    private func catchUp(_ log: ChangeLog, into target: Environment, dbis: [MDB_dbi: MDB_dbi]) throws -> Int {
        var caughtUp = 0
        func replayRounds() throws {
            for _ in 0..<50 {
                if log.count < 256 && log.bytes < 256 << 10 { break }
                caughtUp += try replay(log.take(), into: target, dbis: dbis)
            }
        }
        try replayRounds()
        // Sync, and replay what came during the sync, until a sync leaves little behind:
        // each sync is shorter than the one before, and the pause's sync has only the
        // pages of the last rounds left.
        for _ in 0..<6 {
            do { try target.sync() } catch {
                throw StoreError.storage(error, "compaction catch-up failed, the database is unchanged", dataPath: target.path)
            }
            let before = caughtUp
            try replayRounds()
            if caughtUp - before < 512 { break }
        }
        return caughtUp
    }

    /// Step 3, writer lock held and logging stopped: replays the last changes, syncs and
    /// closes the copy (`copy` becomes nil once closed) and syncs its file. Returns the
    /// changes replayed.
    private func finishCopy(_ log: ChangeLog, into target: Environment, dbis: [MDB_dbi: MDB_dbi],
                            copy: inout Environment?, tmp: String, _ pause: inout PauseSteps) throws -> Int {
        do {
            let last = try replay(log.take(), into: target, dbis: dbis)
            pause.step("replay")
            try target.sync()
            pause.step("sync")
            target.close()
            pause.step("close-copy")
            copy = nil
            try HashStore.fsyncPath(tmp)
            pause.step("fsync-copy")
            return last
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "compaction catch-up failed, the database is unchanged", dataPath: tmp)
        }
    }

    /// Step 3, writer lock held: renames the copy over the data file, syncs the directory
    /// and opens an environment on it in place of the old one. Runs under the mirror's
    /// write lock and `envSwap`'s too: no reader holds the old environment once it is
    /// replaced. Queries read the mirror, so they only wait for this step. Returns the old
    /// environment, still open, for the caller to close after the pause (unmapping a file
    /// of hundreds of MB took 5-9 ms at 10M items); nil when nothing was replaced (the
    /// rename failed: the old environment goes on) or when the new file could not be
    /// opened (the old one is closed then: it no longer names the data file).
    private func swapInCopy(_ tmp: String, _ pause: inout PauseSteps)
        -> (renamed: Bool, renameError: Int32, reopenError: Error?, old: Environment?) {
        envSwap.withWriteLock { rw.withWriteLock {
            let mapSize = env.mapSize
            pause.step("locks")
            // A second name for the old file, so that the rename does not free its blocks
            // (150 ms for 750 MB here) inside the pause; it is unlinked after the pause.
            unlink(oldPath)
            _ = link(dataPath, oldPath)
            let renamed = rename(tmp, dataPath) == 0
            let renameError = errno
            guard renamed else { return (false, renameError, nil, nil) }
            try? HashStore.fsyncPath(directory)
            pause.step("rename")
            // A fresh lock file: one left open by another process (an LMDB tool) would
            // still describe the old file. The old environment keeps its own open, unlinked.
            unlink(dataPath + "-lock")
            testPoint("renamed")
            let old = env
            do {
                let fresh = try Environment(path: dataPath, mapSize: mapSize, maxDatabases: HashStore.maxDatabases)
                do {
                    (dbMeta, dbItems, dbTables, dbPending, dbSources) = try fresh.write { try HashStore.openDatabases($0, create: false) }
                } catch {
                    fresh.close()
                    throw error
                }
                env = fresh
                mapBytes = env.mapSize
                return (true, 0, nil, old)
            } catch {
                old.close()
                return (true, 0, error, nil)
            }
        } }
    }

    /// For the crash tests only: `GDH_TEST_COMPACT_PAUSE=<phase>` makes COMPACT sleep 1 s
    /// at that point (started, copied, caught-up, replayed, renamed), so that a test can
    /// kill the process there.
    private static let testPause = ProcessInfo.processInfo.environment["GDH_TEST_COMPACT_PAUSE"]
    func testPoint(_ phase: String) {
        if HashStore.testPause == phase { usleep(1_000_000) }
    }

    /// Frees the old data file after the swap. Unlinking hundreds of MB at once makes the
    /// file system free (and, mounted with online discard, discard) them all at once, and
    /// the writer's syncs stalled 40-80 ms behind it at 10M items; so when no other process
    /// has the file open, it is shrunk from its end 32 MiB at a time, each step synced,
    /// before the unlink. A file someone else holds (a reader opened before the swap; a
    /// write lease, taken and released at once, is refused then) or that is also `live` (a
    /// swap whose rename failed) is only unlinked.
    static func releaseOldFile(_ path: String, unlessSameAs live: String) {
        defer { unlink(path) }
        var a = stat(), b = stat()
        guard stat(path, &a) == 0, stat(live, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev else { return }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { Glibc.close(fd) }
        // F_SETLEASE (Linux): a write lease is granted only while no other descriptor or
        // mapping has the file open.
        let setLease: Int32 = 1024, writeLease: Int32 = 1, noLease: Int32 = 2
        guard fcntl(fd, setLease, writeLease) == 0 else { return }
        _ = fcntl(fd, setLease, noLease)
        var size = Int(a.st_size)
        while size > 0 {
            size = max(0, size - (32 << 20))
            guard ftruncate(fd, off_t(size)) == 0 else { return }
            _ = fdatasync(fd)
        }
    }

    /// The old data file's second name during a COMPACT swap.
    private var oldPath: String { directory + "/data.mdb.old" }

    /// The copy's handles for this environment's databases.
    func copyDatabases(_ target: Environment) throws -> [MDB_dbi: MDB_dbi] {
        do {
            let c = try target.write { try HashStore.openDatabases($0, create: false) }
            return [dbMeta: c.0, dbItems: c.1, dbTables: c.2, dbPending: c.3, dbSources: c.4]
        } catch {
            throw StoreError.storage(error, "compaction copy is unreadable, the database is unchanged", dataPath: target.path)
        }
    }

    /// Replays logged changes on the compaction copy, growing the copy's map when it
    /// fills. Returns the number of changes.
    ///
    /// A transaction per `replayChunk` changes or so (whole logged batches): LMDB writes a
    /// changed page to a new place and reuses the old one only two transactions later, so
    /// one transaction of tens of thousands of updates spread over the items would move
    /// that many pages of the packed copy to its end and leave their old places free. At
    /// 10M items beside a writer (`gdh-bench compact`), with a transaction per round the
    /// compacted file was 476-480 MB (the file before: 476 MB), with this 385 MB; and the
    /// commit of such a round made writes wait 50-54 ms.
    func replay(_ batches: [ChangeBatch], into target: Environment, dbis: [MDB_dbi: MDB_dbi],
                replayChunk: Int = 1024) throws -> Int {
        var start = 0
        while start < batches.count {
            var end = start, ops = 0
            while end < batches.count && (end == start || ops + batches[end].ops.count <= replayChunk) {
                ops += batches[end].ops.count
                end += 1
            }
            try retryingWhenMapFull(grow: { try target.setMapSize(target.mapSize * 2) }) {
                try target.write { txn in
                    for b in batches[start..<end] { try b.replay(into: txn, dbis: dbis) }
                }
            }
            start = end
        }
        return batches.reduce(0) { $0 + $1.ops.count }
    }
}
