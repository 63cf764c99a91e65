// A small fork-join pool for the inference plans: the caller and up to (threads - 1)
// workers split the parts of a job. Workers spin for a short while after a job before
// they sleep, so that the many short jobs of one forward pass hand over without the
// latency of waking a sleeping thread. One job at a time: a caller that finds the pool
// busy runs its job alone.
#include "neural_kernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

// No PAUSE instruction in the spin: under KVM, pause-loop exiting deschedules a vCPU
// that spins with PAUSE, which made the worker miss most short jobs (measured).
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")

struct gdh_pool {
    int threads;
    pthread_t *workers;
    pthread_mutex_t busy;            // held by the caller of a job
    pthread_mutex_t lock;            // guards sleeping and the condition
    pthread_cond_t wake;
    // The job word: the job's number in the high 32 bits, its next unclaimed part in the
    // low 32. A worker claims a part with a compare-and-swap that also checks the job
    // number, so a late worker can never take a part of a newer job by mistake.
    atomic_ullong job;
    atomic_int done_parts, sleeping;
    int parts;
    gdh_task_fn fn;
    void *ctx;
};

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void work(struct gdh_pool *p, unsigned long long number) {
    unsigned long long v = atomic_load(&p->job);
    for (;;) {
        if ((v >> 32) != number || (long long)(v & 0xffffffffULL) >= p->parts) return;
        if (!atomic_compare_exchange_weak(&p->job, &v, v + 1)) continue;
        p->fn(p->ctx, (int)(v & 0xffffffffULL));
        atomic_fetch_add_explicit(&p->done_parts, 1, memory_order_acq_rel);
        v = atomic_load(&p->job);
    }
}

// Workers live as long as the process: the pool is created once (InferenceSupport's
// sharedPool) and never destroyed.
static void *worker(void *arg) {
    struct gdh_pool *p = arg;
    unsigned long long seen = atomic_load(&p->job) >> 32;
    for (;;) {
        // Spin for up to 50 µs (jobs of one forward pass come a few µs apart), then sleep
        // until the next job: a spinning vCPU slows its neighbour when the host places the
        // two on one core.
        long long until = 0;
        unsigned long long g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->job, memory_order_acquire) >> 32) == seen) {
            CPU_RELAX();
            if (++spins % 256 == 0) {
                const long long t = now_ns();
                if (until == 0) until = t + 50000;
                else if (t > until) break;
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            atomic_fetch_add(&p->sleeping, 1);
            while ((g = atomic_load(&p->job) >> 32) == seen)
                pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->sleeping, 1);
            pthread_mutex_unlock(&p->lock);
        }
        seen = g;
        work(p, g);
    }
}

gdh_pool *gdh_pool_create(int threads) {
    if (threads < 1) threads = 1;
    struct gdh_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->busy, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    atomic_init(&p->job, 0);
    atomic_init(&p->done_parts, 0);
    atomic_init(&p->sleeping, 0);
    p->parts = 0;
    p->workers = calloc((size_t)threads, sizeof(pthread_t));
    for (int i = 0; i < threads - 1; i++) {
        if (pthread_create(&p->workers[i], NULL, worker, p) != 0) { p->threads = i + 1; break; }
    }
    return p;
}

void gdh_pool_run(gdh_pool *p, int parts, gdh_task_fn fn, void *ctx) {
    if (!p || p->threads <= 1 || parts <= 1 || pthread_mutex_trylock(&p->busy) != 0) {
        for (int i = 0; i < parts; i++) fn(ctx, i);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->parts = parts;
    atomic_store_explicit(&p->done_parts, 0, memory_order_relaxed);
    const unsigned long long number = ((atomic_load(&p->job) >> 32) + 1) & 0xffffffffULL;
    atomic_store(&p->job, number << 32);
    if (atomic_load(&p->sleeping) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
    work(p, number);
    while (atomic_load_explicit(&p->done_parts, memory_order_acquire) < parts) CPU_RELAX();
    pthread_mutex_unlock(&p->busy);
}
