/* Ordinary libc file I/O in the directory argv[1], printing a transcript that must be the
 * same on a plain pre-open and an encrypted one (tests/wasi/test_encfs.py):
 * create, write, read, seek, truncate, rename, readdir, stat, unlink, mkdir, rmdir.
 * argv[2] == "check": only read back what an earlier "write" run left (persistence).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[512];

static const char *at(const char *dir, const char *name) {
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }

static void list(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { printf("opendir %d\n", errno); return; }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("ls");
    for (int i = 0; i < n; i++) { printf(" %s", names[i]); free(names[i]); }
    printf("\n");
}

static void cat(const char *p) {
    FILE *f = fopen(p, "r");
    if (!f) { printf("cat %d\n", errno); return; }
    char buf[256] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    printf("cat %zu %.30s\n", n, buf);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *dir = argv[1];
    if (!strcmp(argv[2], "check")) {
        cat(at(dir, "journal/notes.txt"));
        list(at(dir, "journal"));
        return 0;
    }
    /* create + write + read back */
    FILE *f = fopen(at(dir, "a.txt"), "w");
    if (!f) { printf("fopen %d\n", errno); return 1; }
    for (int i = 0; i < 1000; i++) fprintf(f, "line %04d of the secret report\n", i);
    fclose(f);
    struct stat st;
    printf("stat %d %lld\n", stat(at(dir, "a.txt"), &st), (long long)st.st_size);
    /* seek + read */
    int fd = open(at(dir, "a.txt"), O_RDWR);
    char buf[64] = {0};
    printf("lseek %lld\n", (long long)lseek(fd, 31 * 500, SEEK_SET));
    printf("read %zd %.31s\n", read(fd, buf, 31), buf);
    printf("lseek-end %lld\n", (long long)lseek(fd, -10, SEEK_END));
    memset(buf, 0, sizeof buf);
    printf("read %zd %s", read(fd, buf, 64), buf);
    /* pwrite in the middle, pread it back */
    printf("pwrite %zd\n", pwrite(fd, "EDITED", 6, 4090));
    memset(buf, 0, sizeof buf);
    printf("pread %zd %.12s\n", pread(fd, buf, 12, 4087), buf);
    /* truncate */
    printf("ftruncate %d\n", ftruncate(fd, 100));
    fstat(fd, &st);
    printf("fstat %lld\n", (long long)st.st_size);
    close(fd);
    printf("truncate %d\n", truncate(at(dir, "a.txt"), 5000));
    stat(at(dir, "a.txt"), &st);
    printf("stat %lld\n", (long long)st.st_size);
    /* append */
    f = fopen(at(dir, "a.txt"), "a");
    fputs("appended\n", f);
    fclose(f);
    stat(at(dir, "a.txt"), &st);
    printf("append %lld\n", (long long)st.st_size);
    /* mkdir, rename into it, readdir */
    printf("mkdir %d\n", mkdir(at(dir, "journal"), 0755));
    printf("mkdir-again %d %d\n", mkdir(at(dir, "journal"), 0755), errno);
    char from[512];
    snprintf(from, sizeof from, "%s/a.txt", dir);
    printf("rename %d\n", rename(from, at(dir, "journal/notes.txt")));
    f = fopen(at(dir, "journal/tmp"), "w");
    fputs("temporary", f);
    fclose(f);
    list(dir);
    list(at(dir, "journal"));
    printf("rmdir-nonempty %d %d\n", rmdir(at(dir, "journal")), errno);
    printf("unlink %d\n", unlink(at(dir, "journal/tmp")));
    printf("unlink-again %d %d\n", unlink(at(dir, "journal/tmp")), errno);
    printf("stat-missing %d %d\n", stat(at(dir, "journal/tmp"), &st), errno);
    printf("mkdir-rmdir %d %d\n", mkdir(at(dir, "empty"), 0755), rmdir(at(dir, "empty")));
    printf("open-missing %d %d\n", open(at(dir, "nope"), O_RDONLY), errno);
    printf("excl %d %d\n", open(at(dir, "journal/notes.txt"), O_CREAT | O_EXCL | O_WRONLY, 0644),
           errno);
    list(dir);
    cat(at(dir, "journal/notes.txt"));
    return 0;
}
