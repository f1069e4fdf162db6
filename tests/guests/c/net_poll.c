/* A poll() loop over two listeners (fds 3 and 4) and a clock: serve COUNT connections in
 * total, whichever listener they arrive on.  Each connection: read one line in 4-byte reads,
 * each preceded by a poll() on the connection (so data buffered inside the runtime, e.g. TLS
 * plaintext, must still count as readable), answer "<listener fd>:<line>", close.
 * A client that leaves before its line is complete is dropped (and counted).
 * Poll timeouts (20 ms) exercise the clock; their count is printed, not checked.
 *
 *   net_poll COUNT
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    exit(1);
}

static void serve(int lfd) {
    int c = accept(lfd, NULL, NULL);
    if (c < 0) die("accept");
    char line[1024];
    size_t n = 0;
    while (n < sizeof line - 8) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        int r = poll(&p, 1, 10000);
        if (r < 0) die("poll stream");
        if (r == 0) die("poll stream: timed out although data was sent");
        ssize_t k = read(c, line + n, 4);
        if (k <= 0) { /* the client went away (or its TLS handshake failed): drop it */
            printf("dropped on fd %d\n", lfd);
            fflush(stdout);
            close(c);
            return;
        }
        n += (size_t)k;
        if (memchr(line + n - k, '\n', (size_t)k)) break;
    }
    char out[1100];
    int m = snprintf(out, sizeof out, "%d:%.*s", lfd, (int)n, line);
    if (write(c, out, (size_t)m) != m) printf("short write on fd %d\n", lfd);
    close(c);
    printf("served on fd %d\n", lfd);
    fflush(stdout);
}

int main(int argc, char **argv) {
    long count = argc > 1 ? atol(argv[1]) : 1, served = 0, timeouts = 0;
    while (served < count) {
        struct pollfd p[2] = {{.fd = 3, .events = POLLIN}, {.fd = 4, .events = POLLIN}};
        int r = poll(p, 2, 20);
        if (r < 0) die("poll");
        if (r == 0) {
            timeouts++;
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (p[i].revents & POLLIN) {
                serve(p[i].fd);
                served++;
            }
        }
    }
    printf("done: %ld connections, %ld timeouts\n", served, timeouts);
    return 0;
}
