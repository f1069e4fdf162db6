/* fd_write benchmark guest: argv[1] = fd, argv[2] = number of 16-byte writes. */
#include <stdlib.h>
#include <wasi/api.h>

int main(int argc, char **argv) {
    __wasi_fd_t fd = argc > 1 ? (__wasi_fd_t)atoi(argv[1]) : 1;
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    static const char msg[16] = "0123456789abcdef";
    __wasi_ciovec_t iov = {(const uint8_t *)msg, sizeof msg};
    for (long i = 0; i < n; i++) {
        __wasi_size_t w;
        if (__wasi_fd_write(fd, &iov, 1, &w) != 0 || w != sizeof msg) return 1;
    }
    return 0;
}
