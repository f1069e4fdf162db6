/* Opens "/sandbox" N times (argv[1]), reads one entry from each, then reads every stream
 * to its end, in turn (argv[2] = "rr": one entry from each stream per round) or one after
 * the other ("seq"). Prints "ok <min entries> <max entries>" or "fail <why> <errno>".
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[1]);
    int rr = !strcmp(argv[2], "rr");
    DIR **ds = calloc(n, sizeof *ds);
    long *counts = calloc(n, sizeof *counts);
    for (int i = 0; i < n; i++) {
        ds[i] = opendir("/sandbox");
        if (!ds[i]) { printf("fail opendir %d\n", errno); return 1; }
        if (readdir(ds[i])) counts[i]++;
    }
    int live = n;
    while (live) {
        for (int i = 0; i < n; i++) {
            if (!ds[i]) continue;
            do {
                errno = 0;
                struct dirent *e = readdir(ds[i]);
                if (!e) {
                    if (errno) { printf("fail readdir %d\n", errno); return 1; }
                    closedir(ds[i]);
                    ds[i] = NULL;
                    live--;
                    break;
                }
                counts[i]++;
            } while (!rr);
        }
    }
    long lo = counts[0], hi = counts[0];
    for (int i = 1; i < n; i++) {
        if (counts[i] < lo) lo = counts[i];
        if (counts[i] > hi) hi = counts[i];
    }
    printf("ok %ld %ld\n", lo, hi);
    return 0;
}
