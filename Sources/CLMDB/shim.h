#include <lmdb.h>
/* malloc_trim, for HashStore.releaseFreeMemory (glibc; Swift's Glibc module leaves it out). */
#include <malloc.h>
/* sync_file_range(2) (Linux; Swift's Glibc module leaves it out without _GNU_SOURCE), for the
 * packed copy of COMPACT and BACKUP: waits for the file's writeback already started, then
 * starts it for every page dirty now, without waiting for that. Returns 0 or -1 (errno). */
#include <sys/syscall.h>
#include <unistd.h>
static inline int gdh_flush_behind(int fd) {
#ifdef SYS_sync_file_range
    /* SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE over the whole file */
    return (int)syscall(SYS_sync_file_range, fd, (long long)0, (long long)0, 1u | 2u);
#else
    return fdatasync(fd);
#endif
}
