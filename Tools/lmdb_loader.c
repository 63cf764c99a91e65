/*
 * The peer of gdhd's durable ingest: a plain LMDB loader doing the puts gdhd does for
 * `ADD <key> CODE <hex>` of new keys, with the same commit sizes and the same syncs, and
 * nothing else (no socket, no parsing, no in-memory index, no table folds).
 *
 * Per item: `items` id -> code bytes + key (MDB_APPEND). A new id is at or above the
 * stored tables' watermark (meta `tables_next_id`), so gdhd puts no `pending` record for
 * it (Docs/design.md, "Stored layout, pending ids and folds"). Per commit: `meta` next_id,
 * then mdb_txn_commit, which syncs the data file (no MDB_NOSYNC) as gdhd's commits do.
 * Environment flags as gdhd's: MDB_NOSUBDIR, MDB_NOTLS.
 *
 *   cc -O2 -o lmdb_loader Tools/lmdb_loader.c -llmdb
 *   lmdb_loader CODES_FILE BITS BATCH DB_FILE [KEY_PREFIX]
 *
 * CODES_FILE is raw codes, BITS/8 bytes each (Tools/gen_codes.py); keys are
 * KEY_PREFIX (default "b") followed by the item's index, as `gdh bench ingest` sends.
 * Prints one JSON line: codes, seconds, codes_per_second, commits.
 */
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void check(int rc, const char *what) {
    if (rc != 0) {
        fprintf(stderr, "lmdb_loader: %s: %s\n", what, mdb_strerror(rc));
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: lmdb_loader CODES_FILE BITS BATCH DB_FILE [KEY_PREFIX]\n");
        return 2;
    }
    const char *codes_path = argv[1];
    int bits = atoi(argv[2]);
    long batch = atol(argv[3]);
    const char *db_path = argv[4];
    const char *prefix = argc > 5 ? argv[5] : "b";
    if (bits < 32 || bits > 1024 || bits % 32 != 0 || batch < 1) {
        fprintf(stderr, "lmdb_loader: bad BITS or BATCH\n");
        return 2;
    }
    size_t code_bytes = (size_t)bits / 8;
    FILE *fh = fopen(codes_path, "rb");
    if (!fh) { perror(codes_path); return 1; }
    fseek(fh, 0, SEEK_END);
    long size = ftell(fh);
    fseek(fh, 0, SEEK_SET);
    size_t n = (size_t)size / code_bytes;
    unsigned char *codes = malloc((size_t)size);
    if (!codes || fread(codes, 1, (size_t)size, fh) != (size_t)size) { perror("read"); return 1; }
    fclose(fh);

    MDB_env *env;
    check(mdb_env_create(&env), "mdb_env_create");
    check(mdb_env_set_maxdbs(env, 8), "mdb_env_set_maxdbs");
    check(mdb_env_set_mapsize(env, (size_t)64 << 30), "mdb_env_set_mapsize");
    check(mdb_env_open(env, db_path, MDB_NOSUBDIR | MDB_NOTLS, 0600), "mdb_env_open");
    MDB_txn *txn;
    MDB_dbi meta, items;
    check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    check(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), "open meta");
    check(mdb_dbi_open(txn, "items", MDB_CREATE | MDB_INTEGERKEY, &items), "open items");
    check(mdb_txn_commit(txn), "commit");

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned char record[128 + 64];
    char key[64], next_text[16];
    long commits = 0;
    uint32_t id = 1;
    for (size_t start = 0; start < n; start += (size_t)batch) {
        size_t end = start + (size_t)batch < n ? start + (size_t)batch : n;
        check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
        for (size_t i = start; i < end; i++, id++) {
            int klen = snprintf(key, sizeof key, "%s%zu", prefix, i);
            memcpy(record, codes + i * code_bytes, code_bytes);
            memcpy(record + code_bytes, key, (size_t)klen);
            MDB_val k = {sizeof id, &id}, v = {code_bytes + (size_t)klen, record};
            check(mdb_put(txn, items, &k, &v, MDB_APPEND), "put items");
        }
        int len = snprintf(next_text, sizeof next_text, "%u", id);
        MDB_val mk = {7, "next_id"}, mv = {(size_t)len, next_text};
        check(mdb_put(txn, meta, &mk, &mv, 0), "put meta");
        check(mdb_txn_commit(txn), "commit");
        commits++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("{\"codes\": %zu, \"seconds\": %.6f, \"codes_per_second\": %.1f, \"commits\": %ld}\n", n, s, n / s, commits);
    mdb_env_close(env);
    free(codes);
    return 0;
}
