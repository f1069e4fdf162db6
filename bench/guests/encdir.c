/* Encrypted-directory benchmark kernels in the pre-opened /work (bench/encdir.py):
 *   write MIB    create /work/big and write MIB MiB in 64 KiB write() calls, then close
 *   read         read /work/big to the end in 64 KiB read() calls
 *   create N     create N files of 100 bytes (open + write + close each) in /work/small
 * Prints "kernel_ns <n>" on stderr (timing.h): start-up and compilation do not count. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "timing.h"

static char buf[65536];

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 7 + 1);
    long long t0 = now_ns();
    if (!strcmp(argv[1], "write") && argc == 3) {
        long chunks = atol(argv[2]) * 16;
        int fd = open("/work/big", O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) return 3;
        for (long i = 0; i < chunks; i++)
            if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) return 4;
        if (close(fd)) return 5;
    } else if (!strcmp(argv[1], "read")) {
        int fd = open("/work/big", O_RDONLY);
        if (fd < 0) return 3;
        ssize_t n;
        long long total = 0;
        while ((n = read(fd, buf, sizeof buf)) > 0) total += n;
        if (n < 0 || close(fd)) return 4;
        printf("%lld\n", total);
    } else if (!strcmp(argv[1], "create") && argc == 3) {
        long n = atol(argv[2]);
        char name[64];
        if (mkdir("/work/small", 0755)) return 3;
        for (long i = 0; i < n; i++) {
            snprintf(name, sizeof name, "/work/small/f%06ld", i);
            int fd = open(name, O_CREAT | O_WRONLY | O_EXCL, 0644);
            if (fd < 0 || write(fd, buf, 100) != 100 || close(fd)) return 4;
        }
    } else {
        return 2;
    }
    report(t0);
    return 0;
}
