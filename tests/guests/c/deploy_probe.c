/* Probes what a deployed Keep's guest sees; one output line per argument:
 *   cat:PATH      "cat PATH <contents>"          (or "cat PATH errno <n>")
 *   env:NAME      "env NAME <value>" / "env NAME unset"
 *   ls:DIR        "ls DIR a,b,c" (sorted, without . and ..) / "ls DIR errno <n>"
 *   write:PATH    "write PATH ok" / "write PATH errno <n>" (open for writing, create)
 *   mkdir:PATH    "mkdir PATH ok" / "mkdir PATH errno <n>"
 *   unlink:PATH   "unlink PATH ok" / "unlink PATH errno <n>"
 *   stat:PATH     "stat PATH <size> <file|dir>" / "stat PATH errno <n>"
 *   tail:PATH:N   "tail PATH <bytes from offset N>" (lseek then read)
 * Exit code 0.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void cat(const char *path, long off, const char *tag) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("%s %s errno %d\n", tag, path, errno); return; }
    if (off && lseek(fd, off, SEEK_SET) != off) { printf("%s %s errno %d\n", tag, path, errno); close(fd); return; }
    char buf[65536];
    ssize_t n, total = 0;
    while ((n = read(fd, buf + total, sizeof buf - 1 - total)) > 0) total += n;
    buf[total] = 0;
    close(fd);
    printf("%s %s %s\n", tag, path, buf);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        char *colon = strchr(a, ':');
        if (!colon) { printf("bad %s\n", a); continue; }
        *colon = 0;
        char *p = colon + 1;
        if (!strcmp(a, "cat")) {
            cat(p, 0, "cat");
        } else if (!strcmp(a, "tail")) {
            char *c2 = strrchr(p, ':');
            long off = 0;
            if (c2) { *c2 = 0; off = atol(c2 + 1); }
            cat(p, off, "tail");
        } else if (!strcmp(a, "env")) {
            const char *v = getenv(p);
            printf("env %s %s\n", p, v ? v : "unset");
        } else if (!strcmp(a, "ls")) {
            DIR *d = opendir(p);
            if (!d) { printf("ls %s errno %d\n", p, errno); continue; }
            char *names[256];
            int n = 0;
            struct dirent *e;
            while ((e = readdir(d)) && n < 256) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                names[n++] = strdup(e->d_name);
            }
            closedir(d);
            qsort(names, n, sizeof *names, cmp);
            printf("ls %s ", p);
            for (int k = 0; k < n; k++) printf(k ? ",%s" : "%s", names[k]);
            printf("\n");
        } else if (!strcmp(a, "write")) {
            int fd = open(p, O_WRONLY | O_CREAT, 0644);
            if (fd < 0) printf("write %s errno %d\n", p, errno);
            else { printf("write %s ok\n", p); close(fd); }
        } else if (!strcmp(a, "mkdir")) {
            if (mkdir(p, 0755)) printf("mkdir %s errno %d\n", p, errno);
            else printf("mkdir %s ok\n", p);
        } else if (!strcmp(a, "unlink")) {
            if (unlink(p)) printf("unlink %s errno %d\n", p, errno);
            else printf("unlink %s ok\n", p);
        } else if (!strcmp(a, "stat")) {
            struct stat s;
            if (stat(p, &s)) printf("stat %s errno %d\n", p, errno);
            else printf("stat %s %lld %s\n", p, (long long)s.st_size, S_ISDIR(s.st_mode) ? "dir" : "file");
        } else {
            printf("bad %s\n", a);
        }
    }
    return 0;
}
