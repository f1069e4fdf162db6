/* Upstream Enarx's listen/connect scenarios over pre-opened sockets, plus half-close.
 *
 *   net_scenario listen     fd 3 is a listener: accept three connections (default mode,
 *                           explicitly blocking, non-blocking), run the stream scenario on each
 *   net_scenario connect    fd 3 is a connected stream: run the stream scenario on it
 *   net_scenario client     fd 3 is a connected stream: send "hello keep", print the reply line
 *   net_scenario halfclose  accept one connection: echo a line, shutdown(SHUT_WR), then read
 *                           one more line (the socket stays readable) and print it
 *
 * Stream scenario: copy a line back in the default (blocking) mode, again after clearing
 * O_NONBLOCK, then after setting O_NONBLOCK (a read must first give EAGAIN: the peer waits
 * for our "go" line before it sends), retrying on EAGAIN. Output: one line per step.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTENER 3
#define SPIN_MAX 100000000L

static void die(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    exit(1);
}

static void set_nonblock(int fd, int on) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) die("F_GETFL");
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, fl) < 0) die("F_SETFL");
    if (!!(fcntl(fd, F_GETFL) & O_NONBLOCK) != !!on) die("O_NONBLOCK not applied");
}

/* Read up to and including '\n'; on EAGAIN retry (non-blocking mode), counting the retries. */
static size_t read_line(int fd, char *buf, size_t cap, long *again) {
    size_t n = 0;
    long spins = 0;
    while (n < cap - 1) {
        ssize_t k = read(fd, buf + n, 1);
        if (k < 0 && errno == EAGAIN) {
            if (++spins > SPIN_MAX) die("read: peer never sent");
            continue;
        }
        if (k < 0) die("read");
        if (k == 0) break;
        n += (size_t)k;
        if (buf[n - 1] == '\n') break;
    }
    buf[n] = 0;
    if (again) *again += spins;
    return n;
}

static void write_all(int fd, const char *buf, size_t n) {
    long spins = 0;
    while (n) {
        ssize_t k = write(fd, buf, n);
        if (k < 0 && errno == EAGAIN) {
            if (++spins > SPIN_MAX) die("write: peer never drained");
            continue;
        }
        if (k <= 0) die("write");
        buf += k;
        n -= (size_t)k;
    }
}

static void stream(int fd, const char *label) {
    char line[512];
    size_t n = read_line(fd, line, sizeof line, NULL);
    write_all(fd, line, n);
    set_nonblock(fd, 0);
    n = read_line(fd, line, sizeof line, NULL);
    write_all(fd, line, n);
    set_nonblock(fd, 1);
    char c;
    if (read(fd, &c, 1) != -1 || errno != EAGAIN) die("non-blocking read did not give EAGAIN");
    write_all(fd, "go\n", 3);
    long again = 0;
    n = read_line(fd, line, sizeof line, &again);
    write_all(fd, line, n);
    printf("%s stream ok\n", label);
}

static int accept_one(const char *label) {
    long spins = 0;
    for (;;) {
        int c = accept(LISTENER, NULL, NULL);
        if (c >= 0) {
            printf("%s accept fd=%d\n", label, c);
            return c;
        }
        if (errno != EAGAIN) die("accept");
        if (++spins > SPIN_MAX) die("accept: nobody connected");
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    const char *count = getenv("FD_COUNT"), *names = getenv("FD_NAMES");
    printf("FD_COUNT=%s FD_NAMES=%s\n", count ? count : "", names ? names : "");
    fflush(stdout);
    if (!strcmp(mode, "connect")) {
        stream(LISTENER, "connect");
    } else if (!strcmp(mode, "listen")) {
        int c = accept_one("default");
        stream(c, "default");
        close(c);
        set_nonblock(LISTENER, 0);
        c = accept_one("blocking");
        stream(c, "blocking");
        close(c);
        set_nonblock(LISTENER, 1);
        /* The third client connects only after reading this line: EAGAIN is certain. */
        if (accept(LISTENER, NULL, NULL) != -1 || errno != EAGAIN)
            die("non-blocking accept did not give EAGAIN");
        printf("nonblocking accept EAGAIN\n");
        fflush(stdout);
        c = accept_one("nonblocking");
        stream(c, "nonblocking");
        close(c);
    } else if (!strcmp(mode, "client")) {
        char line[512];
        write_all(LISTENER, "hello keep\n", 11);
        read_line(LISTENER, line, sizeof line, NULL);
        printf("reply: %s", line);
    } else if (!strcmp(mode, "halfclose")) {
        char line[512];
        int c = accept_one("halfclose");
        size_t n = read_line(c, line, sizeof line, NULL);
        write_all(c, line, n);
        if (shutdown(c, SHUT_WR) != 0) die("shutdown");
        n = read_line(c, line, sizeof line, NULL);
        printf("after shutdown: %s", line);
        if (read(c, line, sizeof line) != 0) die("expected EOF after the last line");
        printf("eof\n");
        close(c);
    } else {
        printf("usage: net_scenario listen|connect|client|halfclose\n");
        return 2;
    }
    printf("done\n");
    return 0;
}
