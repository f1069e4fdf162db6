/* N write()s of 16 bytes to stdout (one fd_write each); times the loop itself. */
#include <stdlib.h>
#include <unistd.h>
#include "timing.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char msg[16] = "0123456789abcde\n";
    long long t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (write(1, msg, sizeof msg) != (ssize_t)sizeof msg) return 1;
    report(t0);
    return 0;
}
