/* fd_read/fd_write with good and bad pointers, for the native/Python parity tests.
 *
 * Each argument is one command, fields separated by '|'; each prints "<errno> <count>" (and
 * for reads the bytes read, in hex) to stderr, so stdout carries only the data written:
 *   w|fd|how     fd_write of "hello\n"; how = ok, iov (array outside memory), buf (buffer
 *                outside memory), out (result pointer outside memory)
 *   r|fd|how     fd_read of up to 64 bytes, same `how`
 *   many|fd|n    fd_write of n one-byte iovecs ('a'..'z' repeating)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#define OUTSIDE 0xFFFFFF00u

static __wasi_ciovec_t iovs[2048];
static char letters[2048];
static uint8_t buf[64];

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        char *f[4] = {0};
        int nf = 0;
        for (char *p = strtok(argv[a], "|"); p && nf < 4; p = strtok(NULL, "|")) f[nf++] = p;
        if (nf < 3) return 2;
        __wasi_fd_t fd = (__wasi_fd_t)strtoul(f[1], NULL, 0);
        const char *how = f[2];
        __wasi_size_t n = 0;
        __wasi_size_t *out = !strcmp(how, "out") ? (__wasi_size_t *)(uintptr_t)OUTSIDE : &n;
        __wasi_errno_t e;
        if (!strcmp(f[0], "w") || !strcmp(f[0], "r")) {
            static const char msg[] = "hello\n";
            __wasi_iovec_t one = {f[0][0] == 'w' ? (uint8_t *)msg : buf,
                                  f[0][0] == 'w' ? 6 : sizeof buf};
            if (!strcmp(how, "buf")) one.buf = (uint8_t *)(uintptr_t)OUTSIDE;
            const __wasi_iovec_t *arr =
                !strcmp(how, "iov") ? (const __wasi_iovec_t *)(uintptr_t)OUTSIDE : &one;
            if (f[0][0] == 'w')
                e = __wasi_fd_write(fd, (const __wasi_ciovec_t *)arr, 1, out);
            else
                e = __wasi_fd_read(fd, arr, 1, out);
        } else if (!strcmp(f[0], "many")) {
            uint32_t count = (uint32_t)strtoul(how, NULL, 0);
            for (uint32_t i = 0; i < count && i < 2048; i++) {
                letters[i] = (char)('a' + i % 26);
                iovs[i].buf = (const uint8_t *)&letters[i];
                iovs[i].buf_len = 1;
            }
            e = __wasi_fd_write(fd, iovs, count, &n);
        } else {
            return 2;
        }
        fprintf(stderr, "%d %u", e, (unsigned)n);
        if (f[0][0] == 'r' && !e)
            for (__wasi_size_t i = 0; i < n; i++) fprintf(stderr, "%s%02x", i ? "" : " ", buf[i]);
        fprintf(stderr, "\n");
    }
    return 0;
}
