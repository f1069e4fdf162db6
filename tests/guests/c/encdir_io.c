/* Block-pattern file I/O for the encrypted-directory tamper and crash tests.
 *
 * Every 4 KiB block holds one 16-byte record repeated: "%04x%04x%08x" of (tag, block, gen),
 * so a reader can tell whose block it is, where it belongs and which write produced it.
 *
 *   fill PATH TAG NBLOCKS GEN     write blocks 0..NBLOCKS-1 of PATH (created if missing)
 *   pwrite PATH TAG BLOCK GEN     write one block
 *   mkdir PATH                    mkdir; prints "mkdir <errno>"
 *   ls PATH                       "ls <errno>" then one line per entry (not . and ..)
 *   check PATH                    "open <errno> <size>" then "b<i> <errno>[ <tag> <block> <gen>]"
 *                                 per block (tag -1: the block is not one uniform record)
 *   loop DIR NFILES NBLOCKS       forever: gen g = 1, 2, ...: rewrite every block of DIR/f<k>,
 *                                 rewrite DIR/s<k> with O_TRUNC, print "gen <g>" when done
 *   verify DIR NFILES NBLOCKS     read every file loop wrote; print "bad ..." lines for any
 *                                 block that fails to read or is not a whole record of
 *                                 (k, b, g>=1); print "max <g>"; exit 1 if anything was bad
 * errno values are wasi-libc's (= WASI's: EIO is 29).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 65536  /* the encrypted format's block size (enarx.encdir.fileformat.BLOCK) */

static unsigned char buf[BLOCK], want[BLOCK];

static void pattern(unsigned char *out, long tag, long block, long gen) {
    char rec[17];
    snprintf(rec, sizeof rec, "%04lx%04lx%08lx", tag & 0xffff, block & 0xffff, gen & 0xffffffffL);
    for (int i = 0; i < BLOCK; i += 16) memcpy(out + i, rec, 16);
}

/* 1 and (tag, block, gen) if buf is one record repeated, else 0. */
static int parse(const unsigned char *p, size_t n, long *tag, long *block, long *gen) {
    if (n != BLOCK) return 0;
    for (int i = 16; i < BLOCK; i += 16)
        if (memcmp(p, p + i, 16)) return 0;
    char rec[17];
    memcpy(rec, p, 16);
    rec[16] = 0;
    unsigned t, b;
    unsigned long g;
    if (sscanf(rec, "%4x%4x%8lx", &t, &b, &g) != 3) return 0;
    *tag = t, *block = b, *gen = (long)g;
    return 1;
}

static int write_block(int fd, long tag, long block, long gen) {
    pattern(want, tag, block, gen);
    return pwrite(fd, want, BLOCK, (off_t)block * BLOCK) == BLOCK ? 0 : errno;
}

static int fill(const char *path, long tag, long first, long n, long gen) {
    int fd = open(path, O_CREAT | O_RDWR, 0644);
    if (fd < 0) return printf("open %d\n", errno), 1;
    for (long b = first; b < first + n; b++) {
        int e = write_block(fd, tag, b, gen);
        if (e) return printf("write %d\n", e), 1;
    }
    if (close(fd)) return printf("close %d\n", errno), 1;
    printf("ok\n");
    return 0;
}

static int check(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return printf("open %d\n", errno), 0;
    off_t size = lseek(fd, 0, SEEK_END);
    printf("open 0 %lld\n", (long long)size);
    for (long i = 0; (off_t)i * BLOCK < size; i++) {
        ssize_t n = pread(fd, buf, BLOCK, (off_t)i * BLOCK);
        long t, b, g;
        if (n < 0) printf("b%ld %d\n", i, errno);
        else if (parse(buf, (size_t)n, &t, &b, &g)) printf("b%ld 0 %ld %ld %ld\n", i, t, b, g);
        else printf("b%ld 0 -1 %zd\n", i, n);
    }
    close(fd);
    return 0;
}

static int ls(const char *path) {
    DIR *d = opendir(path);
    if (!d) return printf("ls %d\n", errno), 0;
    char names[64][256];
    int n = 0;
    errno = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n < 64) snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    }
    int err = errno;
    closedir(d);
    printf("ls %d\n", err);
    for (int i = 0; i < n && !err; i++) printf("%s\n", names[i]);
    return 0;
}

static int loop(const char *dir, long nfiles, long nblocks) {
    char path[256], small[64];
    for (long gen = 1;; gen++) {
        for (long k = 0; k < nfiles; k++) {
            snprintf(path, sizeof path, "%s/f%ld", dir, k);
            int fd = open(path, O_CREAT | O_RDWR, 0644);
            if (fd < 0) return printf("open %d\n", errno), 1;
            for (long b = 0; b < nblocks; b++)
                if (write_block(fd, k, b, gen)) return printf("write %d\n", errno), 1;
            if (close(fd)) return printf("close %d\n", errno), 1;
            snprintf(path, sizeof path, "%s/s%ld", dir, k);
            fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
            int len = snprintf(small, sizeof small, "small %ld gen %ld\n", k, gen);
            if (fd < 0 || write(fd, small, (size_t)len) != len || close(fd))
                return printf("small %d\n", errno), 1;
        }
        printf("gen %ld\n", gen);
        fflush(stdout);
    }
}

static int verify(const char *dir, long nfiles, long nblocks) {
    char path[256], small[64];
    long max = 0;
    int bad = 0;
    for (long k = 0; k < nfiles; k++) {
        snprintf(path, sizeof path, "%s/f%ld", dir, k);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            if (errno != ENOENT) printf("bad f%ld open %d\n", k, errno), bad = 1;
            continue;
        }
        off_t size = lseek(fd, 0, SEEK_END);
        if (size % BLOCK || size > nblocks * BLOCK) printf("bad f%ld size %lld\n", k, (long long)size), bad = 1;
        for (long b = 0; (off_t)b * BLOCK < size; b++) {
            ssize_t n = pread(fd, buf, BLOCK, (off_t)b * BLOCK);
            long t, bb, g;
            if (n < 0) printf("bad f%ld b%ld errno %d\n", k, b, errno), bad = 1;
            else if (!parse(buf, (size_t)n, &t, &bb, &g) || t != k || bb != b || g < 1)
                printf("bad f%ld b%ld content (%zd bytes)\n", k, b, n), bad = 1;
            else if (g > max) max = g;
        }
        close(fd);
        snprintf(path, sizeof path, "%s/s%ld", dir, k);
        fd = open(path, O_RDONLY);
        if (fd < 0) {
            if (errno != ENOENT) printf("bad s%ld open %d\n", k, errno), bad = 1;
            continue;
        }
        ssize_t n = read(fd, small, sizeof small - 1);
        close(fd);
        if (n < 0) { printf("bad s%ld errno %d\n", k, errno), bad = 1; continue; }
        small[n] = 0;
        long kk, g;
        /* empty = between O_TRUNC and write: the truncate's own (new) state */
        if (n > 0 && (sscanf(small, "small %ld gen %ld\n", &kk, &g) != 2 || kk != k))
            printf("bad s%ld content %s\n", k, small), bad = 1;
    }
    printf("max %ld\n", max);
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *op = argv[1];
    if (!strcmp(op, "fill") && argc == 6)
        return fill(argv[2], atol(argv[3]), 0, atol(argv[4]), atol(argv[5]));
    if (!strcmp(op, "pwrite") && argc == 6)
        return fill(argv[2], atol(argv[3]), atol(argv[4]), 1, atol(argv[5]));
    if (!strcmp(op, "check")) return check(argv[2]);
    if (!strcmp(op, "ls")) return ls(argv[2]);
    if (!strcmp(op, "mkdir")) return printf("mkdir %d\n", mkdir(argv[2], 0755) ? errno : 0), 0;
    if (!strcmp(op, "loop") && argc == 5) return loop(argv[2], atol(argv[3]), atol(argv[4]));
    if (!strcmp(op, "verify") && argc == 5) return verify(argv[2], atol(argv[3]), atol(argv[4]));
    return 2;
}
