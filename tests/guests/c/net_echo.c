/* Echo server: serve COUNT connections one after another (0: forever), echoing every byte
 * until the peer closes (a connection that fails is reported as "dropped: ..." and the server
 * goes on with the next).  MODE "block" uses blocking accept/read/write; "nonblock" sets
 * O_NONBLOCK on the listener and each connection and waits in poll() on EAGAIN.
 *
 * Under WASI the listener is the pre-opened fd 3 (Enarx.toml); natively (the benchmark's
 * baseline, built with gcc) it listens on 127.0.0.1:PORT itself.
 *
 *   net_echo COUNT MODE [PORT]        prints "served N connections, B bytes" at the end
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifndef __wasi__
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#endif

static int nonblocking;

static void die(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    exit(1);
}

static void wait_fd(int fd, short events) {
    struct pollfd p = {.fd = fd, .events = events};
    if (poll(&p, 1, -1) < 0) die("poll");
}

static int open_listener(int argc, char **argv) {
#ifdef __wasi__
    (void)argc;
    (void)argv;
    return 3;
#else
    int port = argc > 3 ? atoi(argv[3]) : 0, one = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 128)) die("bind/listen");
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    printf("listening on %d\n", ntohs(a.sin_port));
    fflush(stdout);
    return s;
#endif
}

/* Echo until EOF; a connection that fails (reset, failed TLS handshake) is dropped. */
static long echo(int c) {
    static char buf[65536];
    long total = 0;
    for (;;) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n < 0 && errno == EAGAIN) {
            wait_fd(c, POLLIN);
            continue;
        }
        if (n < 0) {
            printf("dropped: %s\n", strerror(errno));
            fflush(stdout);
            return total;
        }
        if (n == 0) return total;
        total += n;
        for (ssize_t off = 0; off < n;) {
            ssize_t k = write(c, buf + off, (size_t)(n - off));
            if (k < 0 && errno == EAGAIN) {
                wait_fd(c, POLLOUT);
                continue;
            }
            if (k < 0) {
                printf("dropped: %s\n", strerror(errno));
                fflush(stdout);
                return total;
            }
            off += k;
        }
    }
}

int main(int argc, char **argv) {
    long count = argc > 1 ? atol(argv[1]) : 0, served = 0, bytes = 0;
    nonblocking = argc > 2 && !strcmp(argv[2], "nonblock");
    int l = open_listener(argc, argv);
    if (nonblocking && fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_NONBLOCK) < 0) die("F_SETFL");
    long eagain = 0;
    while (count == 0 || served < count) {
        int c = accept(l, NULL, NULL);
        if (c < 0 && errno == EAGAIN) {
            eagain++;
            wait_fd(l, POLLIN);
            continue;
        }
        if (c < 0) die("accept");
#ifndef __wasi__
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#endif
        if (nonblocking && fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK) < 0) die("F_SETFL");
        bytes += echo(c);
        close(c);
        served++;
    }
    printf("served %ld connections, %ld bytes, %s accept%s\n", served, bytes,
           nonblocking ? "nonblocking" : "blocking", nonblocking && eagain ? " (saw EAGAIN)" : "");
    return 0;
}
