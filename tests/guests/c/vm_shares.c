/* File operations on pre-opened directories, one result line each (errno 0 = success;
 * errno values are wasi-libc's). Prints FD_COUNT/FD_NAMES first.
 *
 *   cp SRC DST        copy SRC to DST byte for byte      -> "cp <errno> <bytes>"
 *   write PATH TEXT   create/truncate PATH, write TEXT   -> "write PATH <errno>"
 *   cat PATH          print PATH's text                  -> "cat PATH <errno> <text>"
 *   seq PATH MIB      write MIB MiB to PATH, read it back -> "seq <errno> write <ms> read <ms>"
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char buf[1 << 20];

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cp(const char *src, const char *dst, long *total) {
    FILE *in = fopen(src, "rb");
    if (!in) return errno;
    FILE *out = fopen(dst, "wb");
    if (!out) { int e = errno; fclose(in); return e; }
    size_t n;
    *total = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) { int e = errno; fclose(in); fclose(out); return e; }
        *total += (long)n;
    }
    fclose(in);
    return fclose(out) ? errno : 0;
}

int main(int argc, char **argv) {
    printf("FD_COUNT=%s FD_NAMES=%s\n", getenv("FD_COUNT"), getenv("FD_NAMES"));
    for (int i = 1; i < argc; i++) {
        errno = 0;
        if (!strcmp(argv[i], "cp") && i + 2 < argc) {
            long total = 0;
            int e = cp(argv[i + 1], argv[i + 2], &total);
            printf("cp %d %ld\n", e, total);
            i += 2;
        } else if (!strcmp(argv[i], "write") && i + 2 < argc) {
            FILE *f = fopen(argv[i + 1], "w");
            int e = f ? 0 : errno;
            if (f) {
                fputs(argv[i + 2], f);
                if (fclose(f)) e = errno;
            }
            printf("write %s %d\n", argv[i + 1], e);
            i += 2;
        } else if (!strcmp(argv[i], "cat") && i + 1 < argc) {
            FILE *f = fopen(argv[i + 1], "r");
            size_t n = 0;
            int e = f ? 0 : errno;
            if (f) { n = fread(buf, 1, sizeof buf - 1, f); fclose(f); }
            buf[n] = 0;
            printf("cat %s %d %s\n", argv[i + 1], e, buf);
            i += 1;
        } else if (!strcmp(argv[i], "seq") && i + 2 < argc) {
            long mib = atol(argv[i + 2]);
            memset(buf, 'x', sizeof buf);
            double t0 = now_ms();
            FILE *f = fopen(argv[i + 1], "wb");
            int e = f ? 0 : errno;
            for (long k = 0; f && k < mib; k++)
                if (fwrite(buf, 1, sizeof buf, f) != sizeof buf) { e = errno; break; }
            if (f && fclose(f)) e = errno;
            double t1 = now_ms();
            f = e ? NULL : fopen(argv[i + 1], "rb");
            long got = 0;
            size_t n;
            while (f && (n = fread(buf, 1, sizeof buf, f)) > 0) got += (long)n;
            if (f) fclose(f);
            double t2 = now_ms();
            if (!e && got != mib << 20) e = EIO;
            printf("seq %d write %.0f read %.0f\n", e, t1 - t0, t2 - t1);
            i += 2;
        } else {
            printf("bad op %s\n", argv[i]);
            return 2;
        }
    }
    return 0;
}
