/* Integer loop: a xorshift/multiply-accumulate chain the compiler cannot fold away. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "timing.h"

int main(int argc, char **argv) {
    uint64_t n = argc > 1 ? strtoull(argv[1], 0, 10) : 400000000ULL;
    long long t0 = now_ns();
    uint64_t x = 88172645463325252ULL, acc = 0;
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        acc += (x * 2654435761ULL) >> (i & 15);
    }
    report(t0);
    printf("%llu\n", (unsigned long long)acc);
    return 0;
}
