#include <lmdb.h>
/* malloc_trim, for HashStore.releaseFreeMemory (glibc; Swift's Glibc module leaves it out). */
#include <malloc.h>
