/* Native fast path for WASI fd_read / fd_write on stdio and plain files, and fd_read on
 * files of encrypted pre-opens (decrypted here; see enarx.wasi.encnative).
 *
 * Built by enarx.wasi.native (see its docstring for where and how); loaded with ctypes. It
 * links against nothing but libc: every wasmtime function it calls is a pointer handed in by
 * Python (from wasmtime-py's already-loaded libwasmtime), and so is every OpenSSL function
 * (from the process's libcrypto, declared by hand below), so no headers are needed.
 *
 * Contract with enarx.wasi.host: the host keeps `fds` in sync with its FdTable (guest fd ->
 * host fd + what the fast path may do). Anything this file does not handle exactly as the
 * Python shim would (unknown fd, missing right, non-plain handle, a failed memory lookup)
 * is passed to the Python callback unchanged, so the guest sees one behaviour.
 */
#include "_fastio.h"

#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAP_SIZE 1024      /* guest fds below this can be native */
#define MAX_IOVECS 1024    /* Linux IOV_MAX, as enarx.wasi.guestmem */
#define MAX_IO_BYTES 0x7FFFF000u
#define PIPE_BUF_BYTES 4096
#define WASI_EFAULT 21
#define WASI_EIO 29

#define F_READ 1u
#define F_WRITE 2u
#define F_STDIO 4u /* StdioHandle: finish short writes, wait on EAGAIN, may block */
#define F_ENC 8u   /* a file of an encrypted pre-open: enc_read below */

typedef void *(*trap_new_t)(const char *, size_t);
typedef bool (*export_get_t)(void *, const char *, size_t, void *);
typedef void *(*caller_context_t)(void *);
typedef uint8_t *(*memory_data_t)(const void *, const void *);
typedef size_t (*memory_size_t)(const void *, const void *);
typedef void *(*raw_cb_t)(void *, void *, uint64_t *, size_t);
typedef void *(*get_fuel_t)(const void *, uint64_t *);
typedef void (*error_delete_t)(void *);


struct fastio {
    trap_new_t trap_new;
    export_get_t export_get;
    caller_context_t caller_context;
    memory_data_t memory_data;
    memory_size_t memory_size;
    raw_cb_t py_read, py_write;
    get_fuel_t get_fuel;
    error_delete_t error_delete;
    int metered; /* fuel is on: every call goes to Python, which charges for it */
    size_t mem_offset; /* offsetof(wasmtime_extern_t, of) */
    unsigned mem_kind; /* WASMTIME_EXTERN_MEMORY */
    void *ctx;         /* store context, cached: one fastio serves one store */
    _Alignas(16) unsigned char ext[64];
    int has_deadline;
    struct timespec deadline;
    int timed_out;
    uint64_t native_calls, fallback_calls;
    uint16_t errmap[256];
    int32_t host_fd[MAP_SIZE];
    uint8_t flags[MAP_SIZE];
    struct encfile *enc[MAP_SIZE]; /* F_ENC: the open file's shared state ... */
    int64_t *pos[MAP_SIZE];        /* ... and this fd's position (owned by Python) */
};

struct fastio *fastio_new(void **fns, size_t mem_offset, unsigned mem_kind,
                          const uint16_t *errmap) {
    struct fastio *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->trap_new = (trap_new_t)fns[0];
    st->export_get = (export_get_t)fns[1];
    st->caller_context = (caller_context_t)fns[2];
    st->memory_data = (memory_data_t)fns[3];
    st->memory_size = (memory_size_t)fns[4];
    st->py_read = (raw_cb_t)fns[5];
    st->py_write = (raw_cb_t)fns[6];
    st->get_fuel = (get_fuel_t)fns[7];
    st->error_delete = (error_delete_t)fns[8];
    st->mem_offset = mem_offset;
    st->mem_kind = mem_kind;
    memcpy(st->errmap, errmap, sizeof st->errmap);
    for (int i = 0; i < MAP_SIZE; i++) st->host_fd[i] = -1;
    return st;
}

void fastio_free(struct fastio *st) { free(st); }

void fastio_set_fd(struct fastio *st, uint32_t gfd, int32_t hfd, uint32_t flags) {
    if (gfd < MAP_SIZE) {
        st->host_fd[gfd] = hfd;
        st->flags[gfd] = (uint8_t)flags;
        st->enc[gfd] = NULL;
        st->pos[gfd] = NULL;
    }
}

void fastio_set_enc(struct fastio *st, uint32_t gfd, struct encfile *enc, int64_t *pos) {
    if (gfd < MAP_SIZE) {
        st->host_fd[gfd] = -1;
        st->flags[gfd] = (uint8_t)(F_ENC | F_READ);
        st->enc[gfd] = enc;
        st->pos[gfd] = pos;
    }
}

void fastio_set_deadline(struct fastio *st, int has, int64_t sec, int64_t nsec) {
    st->has_deadline = has;
    st->deadline.tv_sec = (time_t)sec;
    st->deadline.tv_nsec = (long)nsec;
}

/* out: native calls, Python fallbacks, timed out */
void fastio_stats(const struct fastio *st, uint64_t *out) {
    out[0] = st->native_calls;
    out[1] = st->fallback_calls;
    out[2] = (uint64_t)st->timed_out;
}

static uint16_t wasi_errno(const struct fastio *st, int e) {
    return (e >= 0 && e < 256 && st->errmap[e]) ? st->errmap[e] : WASI_EIO;
}

static uint8_t *memory(struct fastio *st, void *caller, size_t *size) {
    if (!st->ctx) {
        if (!st->export_get(caller, "memory", 6, st->ext) || st->ext[0] != st->mem_kind)
            return NULL;
        st->ctx = st->caller_context(caller);
        /* get_fuel fails (returns an error) exactly when fuel is not enabled */
        uint64_t fuel;
        void *err = st->get_fuel(st->ctx, &fuel);
        if (err)
            st->error_delete(err);
        else
            st->metered = 1;
    }
    if (st->metered) return NULL;
    const void *mem = st->ext + st->mem_offset;
    *size = st->memory_size(st->ctx, mem);
    return st->memory_data(st->ctx, mem);
}

static inline uint32_t le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* enarx.wasi.guestmem.iovecs: the whole array must be in memory, at most MAX_IOVECS
 * entries and MAX_IO_BYTES bytes are used. Returns the count, or -1 for EFAULT. */
static int iovecs(uint8_t *mem, size_t size, uint32_t ptr, uint32_t count,
                  struct iovec *out, size_t *total) {
    if ((uint64_t)ptr + 8ull * count > size) return -1;
    uint32_t room = MAX_IO_BYTES;
    int k = 0;
    size_t sum = 0;
    uint32_t lim = count < MAX_IOVECS ? count : MAX_IOVECS;
    for (uint32_t i = 0; i < lim; i++) {
        uint32_t buf = le32(mem + ptr + 8ull * i), ln = le32(mem + ptr + 8ull * i + 4);
        if ((uint64_t)buf + ln > size) return -1;
        out[k].iov_base = mem + buf;
        if (ln >= room) {
            out[k++].iov_len = room;
            sum += room;
            break;
        }
        room -= ln;
        out[k++].iov_len = ln;
        sum += ln;
    }
    *total = sum;
    return k;
}

/* enarx.wasi.guestmem.clip */
static int clip(struct iovec *iov, int n, size_t limit, size_t *total) {
    size_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len >= limit) {
            iov[i].iov_len = limit;
            *total = sum + limit;
            return i + 1;
        }
        limit -= iov[i].iov_len;
        sum += iov[i].iov_len;
    }
    *total = sum;
    return n;
}



/* 0 when ready, -1 when a signal interrupted the wait. */
static int wait_forever(int fd, short events) {
    struct pollfd p = {fd, events, 0};
    return poll(&p, 1, -1) < 0 && errno == EINTR ? -1 : 0;
}

/* FdCalls._wait_ready: 0 when ready, -1 when the deadline passed, -2 on a signal. */
static int wait_deadline(struct fastio *st, int fd, short events) {
    struct pollfd p = {fd, events, 0};
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = (double)(st->deadline.tv_sec - now.tv_sec) +
                      (double)(st->deadline.tv_nsec - now.tv_nsec) / 1e9;
        if (left <= 0) return -1;
        int ms = (int)((left < 1.0 ? left : 1.0) * 1000);
        if (ms < 1) ms = 1;
        int r = poll(&p, 1, ms);
        if (r > 0) return 0;
        if (r < 0 && errno == EINTR) return -2;
    }
}

static void *deadline_trap(struct fastio *st) {
    static const char msg[] = "enarx: deadline reached in a blocking host call";
    st->timed_out = 1;
    return st->trap_new(msg, sizeof msg - 1);
}

static void *interrupted_trap(struct fastio *st) {
    static const char msg[] = "enarx: a signal interrupted a blocking host call";
    return st->trap_new(msg, sizeof msg - 1);
}

/* StdioHandle.write: finish a short write, as a blocking write would. Returns bytes
 * written, or -(wasi errno) when nothing was. */
static int64_t stdio_write(struct fastio *st, int fd, struct iovec *iov, int n, size_t total) {
    ssize_t r = writev(fd, iov, n);
    size_t done;
    if (r < 0) {
        if (errno == EINTR) return INTERRUPTED;
        if (errno != EAGAIN) return -(int64_t)wasi_errno(st, errno);
        done = 0;
    } else {
        done = (size_t)r;
    }
    if (done == total) return (int64_t)done;
    advance(&iov, &n, done);
    while (n) {
        r = writev(fd, iov, n);
        if (r < 0) {
            if (errno == EAGAIN) {
                if (wait_forever(fd, POLLOUT) < 0) {
                    if (done) return (int64_t)done; /* a short write: a valid answer */
                    return INTERRUPTED;
                }
                continue;
            }
            if (errno == EINTR) {
                if (done) return (int64_t)done;
                return INTERRUPTED;
            }
            if (done) return (int64_t)done;
            return -(int64_t)wasi_errno(st, errno);
        }
        done += (size_t)r;
        advance(&iov, &n, (size_t)r);
    }
    return (int64_t)done;
}

static int64_t stdio_read(struct fastio *st, int fd, struct iovec *iov, int n) {
    for (;;) {
        ssize_t r = readv(fd, iov, n);
        if (r >= 0) return r;
        if (errno == EINTR) return INTERRUPTED;
        if (errno != EAGAIN) return -(int64_t)wasi_errno(st, errno);
        if (wait_forever(fd, POLLIN) < 0) return INTERRUPTED;
    }
}

static int64_t plain(struct fastio *st, ssize_t r) {
    if (r < 0 && errno == EINTR) return INTERRUPTED;
    return r >= 0 ? (int64_t)r : -(int64_t)wasi_errno(st, errno);
}

/* Raw wasmtime callbacks: args are 16-byte slots, so argument i is vals[2*i]. */
void *fastio_fd_write(void *env, void *caller, uint64_t *vals, size_t nvals) {
    struct fastio *st = env;
    uint32_t fd = (uint32_t)vals[0], iovp = (uint32_t)vals[2], cnt = (uint32_t)vals[4],
             out = (uint32_t)vals[6];
    size_t size;
    uint8_t *mem;
    if (fd >= MAP_SIZE || st->host_fd[fd] < 0 || !(st->flags[fd] & F_WRITE) ||
        !(mem = memory(st, caller, &size))) {
        st->fallback_calls++;
        return st->py_write(NULL, caller, vals, nvals);
    }
    st->native_calls++;
    int hfd = st->host_fd[fd], stdio = st->flags[fd] & F_STDIO;
    struct iovec iov[MAX_IOVECS];
    size_t total;
    int n;
    int64_t r;
    if (stdio && st->has_deadline) {
        /* FdCalls._fd_write_slow: iovecs, wait for POLLOUT, write at most PIPE_BUF. */
        if ((n = iovecs(mem, size, iovp, cnt, iov, &total)) < 0) goto fault;
        int w = wait_deadline(st, hfd, POLLOUT);
        if (w == -1) return deadline_trap(st);
        if (w == -2) goto interrupted;
        n = clip(iov, n, PIPE_BUF_BYTES, &total);
        r = stdio_write(st, hfd, iov, n, total);
    } else {
        if (cnt == 1) { /* FdCalls._fd_write's one-iovec path: no MAX_IO_BYTES clip */
            if ((uint64_t)iovp + 8 > size) goto fault;
            uint32_t buf = le32(mem + iovp), ln = le32(mem + iovp + 4);
            if ((uint64_t)buf + ln > size) goto fault;
            iov[0].iov_base = mem + buf;
            iov[0].iov_len = ln;
            total = ln;
            n = 1;
        } else if ((n = iovecs(mem, size, iovp, cnt, iov, &total)) < 0) {
            goto fault;
        }
        r = stdio ? stdio_write(st, hfd, iov, n, total) : plain(st, writev(hfd, iov, n));
    }
    if (r == INTERRUPTED) goto interrupted;
    if (r < 0) {
        vals[0] = (uint64_t)(-r);
        return NULL;
    }
    if ((uint64_t)out + 4 > size) goto fault;
    uint32_t v = (uint32_t)r;
    memcpy(mem + out, &v, 4);
    vals[0] = 0;
    return NULL;
fault:
    vals[0] = WASI_EFAULT;
    return NULL;
interrupted:
    return interrupted_trap(st);
}

void *fastio_fd_read(void *env, void *caller, uint64_t *vals, size_t nvals) {
    struct fastio *st = env;
    uint32_t fd = (uint32_t)vals[0], iovp = (uint32_t)vals[2], cnt = (uint32_t)vals[4],
             out = (uint32_t)vals[6];
    size_t size;
    uint8_t *mem;
    int enc = fd < MAP_SIZE && (st->flags[fd] & F_ENC);
    if (fd >= MAP_SIZE || !(st->flags[fd] & F_READ) ||
        (enc ? !enc_valid(st->enc[fd]) || *st->pos[fd] < 0 : st->host_fd[fd] < 0) ||
        !(mem = memory(st, caller, &size))) {
        st->fallback_calls++;
        return st->py_read(NULL, caller, vals, nvals);
    }
    st->native_calls++;
    struct iovec iov[MAX_IOVECS];
    size_t total;
    int n = iovecs(mem, size, iovp, cnt, iov, &total);
    if (n < 0) {
        vals[0] = WASI_EFAULT;
        return NULL;
    }
    int64_t r;
    if (enc) {
        r = enc_read(st->enc[fd], (uint64_t)*st->pos[fd], iov, n, total);
        if (r >= 0)
            *st->pos[fd] += r; /* as the Python path: the offset moves before `out` is written */
        else if (r != INTERRUPTED)
            r = -(int64_t)wasi_errno(st, (int)-r);
    } else {
        int hfd = st->host_fd[fd], stdio = st->flags[fd] & F_STDIO;
        if (stdio && st->has_deadline) {
            int w = wait_deadline(st, hfd, POLLIN | POLLPRI);
            if (w == -1) return deadline_trap(st);
            if (w == -2) goto interrupted;
        }
        r = stdio ? stdio_read(st, hfd, iov, n) : plain(st, readv(hfd, iov, n));
    }
    if (r == INTERRUPTED) goto interrupted;
    if (r < 0) {
        vals[0] = (uint64_t)(-r);
        return NULL;
    }
    if ((uint64_t)out + 4 > size) {
        vals[0] = WASI_EFAULT;
        return NULL;
    }
    uint32_t v = (uint32_t)r;
    memcpy(mem + out, &v, 4);
    vals[0] = 0;
    return NULL;
interrupted:
    return interrupted_trap(st);
}
