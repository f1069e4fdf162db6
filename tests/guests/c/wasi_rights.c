/* libc calls whose rights the shim must grant as Linux and wasmtime do, one line each:
 * "<call> <0 or errno>". Expects a pre-open "/sandbox" holding a file "f" and a dir "d".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void report(const char *what, int rc) { printf("%s %d\n", what, rc < 0 ? errno : 0); }

int main(void) {
    int ro = open("/sandbox/f", O_RDONLY);
    if (ro < 0) return 1;
    struct timespec ts[2] = {{1000000, 0}, {2000000, 0}};
    report("futimens_ro", futimens(ro, ts));
    report("fsync_ro", fsync(ro));
    report("fdatasync_ro", fdatasync(ro));
    report("ftruncate_ro", ftruncate(ro, 0));
    close(ro);
    int d = open("/sandbox/d", O_RDONLY | O_DIRECTORY);
    report("fsync_dir", fsync(d));
    close(d);
    int ap = open("/sandbox/f", O_WRONLY | O_APPEND);
    report("pwrite_append", (int)pwrite(ap, "XY", 2, 0));
    close(ap);
    return 0;
}
