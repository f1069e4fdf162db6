/* Kernel-internal timing shared by the compute benchmarks: the kernel's own wall time,
   so start-up and compilation do not count. Prints "kernel_ns <n>" on stderr. */
#include <stdio.h>
#include <time.h>

static inline long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void report(long long t0) {
    fprintf(stderr, "kernel_ns %lld\n", now_ns() - t0);
}
