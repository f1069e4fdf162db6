/* Tries to leave the sandbox through ordinary libc calls (pre-open mapped at "/").
 * argv[1..]: paths to open for reading; prints "<path> <ok|errno-name>". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        if (fd >= 0) {
            char b[64] = {0};
            ssize_t n = read(fd, b, sizeof b - 1);
            printf("%s ok %zd %s\n", argv[i], n, b);
            close(fd);
        } else {
            printf("%s err %s\n", argv[i], strerror(errno));
        }
    }
    FILE *f = fopen("/../../created_by_guest", "w");
    printf("create %s\n", f ? "ok" : strerror(errno));
    if (f) fclose(f);
    return 0;
}
