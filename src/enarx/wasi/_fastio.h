/* What _fastio.c (the fd_read/fd_write callbacks) and _encread.c (reading files of
 * encrypted pre-opens) share; they are built into one library by enarx.wasi.native. */
#ifndef ENARX_FASTIO_H
#define ENARX_FASTIO_H
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

/* A signal (Ctrl-C: Python's SIGINT handler interrupts system calls) arrived before any
 * byte moved. Retrying would block again with the handler still pending, and a Python
 * fallback would meet KeyboardInterrupt before its `try`, so the call ends with a trap and
 * the pending handler raises as soon as control is back in Python (`enarx`: exit 130). */
#define INTERRUPTED INT64_MIN

/* Skip the first k bytes of an iovec array. */
static inline void advance(struct iovec **iov, int *n, size_t k) {
    while (*n && k >= (*iov)->iov_len) {
        k -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n && k) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + k;
        (*iov)->iov_len -= k;
    }
}


/* _encread.c */
struct encfile;
int enc_valid(const struct encfile *e);
int64_t enc_read(struct encfile *e, uint64_t pos, struct iovec *iov, int n, size_t total);

#endif
