/* A VM Keep's network in one run (tests/vm/test_network.py).
 * fd 3: a listener (TLS, terminated inside the Keep); the fds named as arguments:
 * connections the Keep made.
 *   vm_net FD...
 * 1. on each FD: send "hello from the keep\n" and print the peer's answer: "<fd>:<line>";
 * 2. accept connections on fd 3 until one sends a line (clients that leave first, e.g. curl
 *    refusing a pin, are skipped), answer "vm:<line>", close, print "served".
 */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    return 1;
}

static ssize_t read_line(int fd, char *buf, size_t size) {
    size_t n = 0;
    while (n < size - 1) {
        ssize_t k = read(fd, buf + n, size - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
        if (memchr(buf + n - k, '\n', (size_t)k)) break;
    }
    buf[n] = 0;
    return (ssize_t)n;
}

int main(int argc, char **argv) {
    static const char hello[] = "hello from the keep\n";
    char line[1024];
    for (int i = 1; i < argc; i++) {
        int fd = atoi(argv[i]);
        if (write(fd, hello, sizeof hello - 1) != (ssize_t)(sizeof hello - 1)) return die("write");
        if (read_line(fd, line, sizeof line) <= 0) return die("read");
        printf("%d:%s", fd, line);
        fflush(stdout);
    }
    int c;
    for (;;) {
        c = accept(3, NULL, NULL);
        if (c < 0) return die("accept");
        if (read_line(c, line, sizeof line) > 0) break;
        close(c);
        printf("dropped\n");
        fflush(stdout);
    }
    char out[1100];
    int m = snprintf(out, sizeof out, "vm:%s", line);
    if (write(c, out, (size_t)m) != m) return die("write");
    close(c);
    printf("served\n");
    return 0;
}
