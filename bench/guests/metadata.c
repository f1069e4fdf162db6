/* Metadata-heavy work in the pre-opened /work: create N files (open+write+close), stat each,
 * open+read each, list the directory, unlink each. argv[1] = N (default 10000). */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "timing.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    char name[64], buf[16];
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "/work/f%06ld", i);
        int fd = open(name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0 || write(fd, "data\n", 5) != 5 || close(fd) != 0) return 1;
    }
    for (long i = 0; i < n; i++) {
        struct stat st;
        snprintf(name, sizeof name, "/work/f%06ld", i);
        if (stat(name, &st) != 0 || st.st_size != 5) return 2;
        int fd = open(name, O_RDONLY);
        if (fd < 0 || read(fd, buf, sizeof buf) != 5 || close(fd) != 0) return 3;
    }
    DIR *d = opendir("/work");
    if (!d) return 4;
    long seen = 0;
    for (struct dirent *e; (e = readdir(d));) seen += e->d_name[0] == 'f';
    closedir(d);
    if (seen != n) return 5;
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "/work/f%06ld", i);
        if (unlink(name) != 0) return 6;
    }
    report(t0);
    return 0;
}
