/* stdin -> stdout with raw fd_read/fd_write, big buffers; prints nothing else. */
#include <unistd.h>
static char buf[1 << 16];
int main(void) {
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0) return 2;
        if (n == 0) return 0;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(1, buf + off, n - off);
            if (w <= 0) return 3;
            off += w;
        }
    }
}
