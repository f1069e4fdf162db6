/* A tiny interpreter of raw WASI preview1 calls, driven by argv, for the shim's tests.
 *
 * Each argument is one command, fields separated by '|', e.g. "open|3|dir/f|1|0|0|0".
 * Each command prints one line: "<name> <errno>[ <result...>]". A field "$" means the fd
 * returned by the last successful open/accept. Numbers accept 0x prefixes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

/* proc_raise is gone from current wasi-libc headers; import it directly. */
__attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_raise")))
int32_t raw_proc_raise(int32_t sig);

static uint32_t last_fd = 0;
static char *f[12];
static int nf;

static uint64_t num(int i) {
    if (i >= nf) return 0;
    if (strcmp(f[i], "$") == 0) return last_fd;
    return strtoull(f[i], NULL, 0);
}
static const char *str(int i) { return i < nf ? f[i] : ""; }

static void hex(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

static uint8_t buf[4 * 65536];

static void run(char *cmd) {
    nf = 0;
    for (char *s = cmd; nf < 12;) {
        f[nf++] = s;
        char *bar = strchr(s, '|');
        if (!bar) break;
        *bar = 0;
        s = bar + 1;
    }
    const char *op = f[0];
    __wasi_errno_t e = 0;
    printf("%s ", op);
    if (!strcmp(op, "open")) {
        /* open|dirfd|path|oflags|rights_base|fdflags|lookupflags */
        __wasi_fd_t fd = 0;
        uint64_t rights = num(4);
        e = __wasi_path_open(num(1), num(6), str(2), num(3), rights, rights, num(5), &fd);
        if (!e) last_fd = fd;
        printf("%d %u", e, e ? 0 : fd);
    } else if (!strcmp(op, "read") || !strcmp(op, "pread")) {
        __wasi_iovec_t iov = {buf, (size_t)num(2)};
        __wasi_size_t n = 0;
        e = op[0] == 'p' ? __wasi_fd_pread(num(1), &iov, 1, num(3), &n)
                         : __wasi_fd_read(num(1), &iov, 1, &n);
        printf("%d ", e);
        hex(buf, e ? 0 : n);
    } else if (!strcmp(op, "readv")) {
        /* readv|fd|len,len,...: one fd_read into that many buffers, laid out back to back
         * in `buf` with one spare byte between them (which must stay untouched: 'x') */
        __wasi_iovec_t iov[16];
        size_t k = 0, at = 0;
        for (char *s = (char *)str(2); *s && k < 16; k++) {
            size_t len = strtoul(s, &s, 0);
            if (at + len + 1 > sizeof buf) break;
            if (*s == ',') s++;
            iov[k].buf = buf + at;
            iov[k].buf_len = len;
            at += len + 1;
        }
        memset(buf, 'x', at);
        __wasi_size_t n = 0;
        e = __wasi_fd_read(num(1), iov, k, &n);
        printf("%d ", e);
        hex(buf, e ? 0 : at);
    } else if (!strcmp(op, "write") || !strcmp(op, "pwrite")) {
        __wasi_ciovec_t iov = {(const uint8_t *)str(2), strlen(str(2))};
        __wasi_size_t n = 0;
        e = op[0] == 'p' ? __wasi_fd_pwrite(num(1), &iov, 1, num(3), &n)
                         : __wasi_fd_write(num(1), &iov, 1, &n);
        printf("%d %u", e, (unsigned)n);
    } else if (!strcmp(op, "seek")) {
        __wasi_filesize_t pos = 0;
        e = __wasi_fd_seek(num(1), (int64_t)num(2), num(3), &pos);
        printf("%d %llu", e, (unsigned long long)pos);
    } else if (!strcmp(op, "tell")) {
        __wasi_filesize_t pos = 0;
        e = __wasi_fd_tell(num(1), &pos);
        printf("%d %llu", e, (unsigned long long)pos);
    } else if (!strcmp(op, "close")) {
        printf("%d", __wasi_fd_close(num(1)));
    } else if (!strcmp(op, "mkdir")) {
        printf("%d", __wasi_path_create_directory(num(1), str(2)));
    } else if (!strcmp(op, "rmdir")) {
        printf("%d", __wasi_path_remove_directory(num(1), str(2)));
    } else if (!strcmp(op, "unlink")) {
        printf("%d", __wasi_path_unlink_file(num(1), str(2)));
    } else if (!strcmp(op, "rename")) {
        printf("%d", __wasi_path_rename(num(1), str(2), num(3), str(4)));
    } else if (!strcmp(op, "symlink")) {
        printf("%d", __wasi_path_symlink(str(1), num(2), str(3)));
    } else if (!strcmp(op, "link")) {
        printf("%d", __wasi_path_link(num(1), num(2), str(3), num(4), str(5)));
    } else if (!strcmp(op, "readlink")) {
        __wasi_size_t n = 0;
        e = __wasi_path_readlink(num(1), str(2), buf, num(3) ? num(3) : sizeof buf, &n);
        printf("%d %.*s", e, e ? 0 : (int)n, (char *)buf);
    } else if (!strcmp(op, "stat") || !strcmp(op, "fstat")) {
        __wasi_filestat_t s = {0};
        e = op[0] == 'f' ? __wasi_fd_filestat_get(num(1), &s)
                         : __wasi_path_filestat_get(num(1), num(3), str(2), &s);
        printf("%d %u %llu %llu %llu %llu %llu", e, s.filetype, (unsigned long long)s.size,
               (unsigned long long)s.nlink, (unsigned long long)s.atim,
               (unsigned long long)s.mtim, (unsigned long long)s.ino);
    } else if (!strcmp(op, "fdstat")) {
        __wasi_fdstat_t s = {0};
        e = __wasi_fd_fdstat_get(num(1), &s);
        printf("%d %u %u %llu %llu", e, s.fs_filetype, s.fs_flags,
               (unsigned long long)s.fs_rights_base, (unsigned long long)s.fs_rights_inheriting);
    } else if (!strcmp(op, "truncate")) {
        printf("%d", __wasi_fd_filestat_set_size(num(1), num(2)));
    } else if (!strcmp(op, "settimes")) {
        printf("%d", __wasi_path_filestat_set_times(num(1), num(6), str(2), num(3), num(4), num(5)));
    } else if (!strcmp(op, "fsettimes")) {
        printf("%d", __wasi_fd_filestat_set_times(num(1), num(2), num(3), num(4)));
    } else if (!strcmp(op, "readdir")) {
        /* readdir|fd|bufsize|cookie : prints the raw buffer as hex */
        __wasi_size_t used = 0;
        e = __wasi_fd_readdir(num(1), buf, num(2), num(3), &used);
        printf("%d ", e);
        hex(buf, e ? 0 : used);
    } else if (!strcmp(op, "renumber")) {
        printf("%d", __wasi_fd_renumber(num(1), num(2)));
    } else if (!strcmp(op, "prestat")) {
        __wasi_prestat_t p;
        e = __wasi_fd_prestat_get(num(1), &p);
        printf("%d", e);
        if (!e) {
            e = __wasi_fd_prestat_dir_name(num(1), buf, p.u.dir.pr_name_len);
            printf(" %d %.*s", e, (int)p.u.dir.pr_name_len, (char *)buf);
        }
    } else if (!strcmp(op, "setflags")) {
        printf("%d", __wasi_fd_fdstat_set_flags(num(1), num(2)));
    } else if (!strcmp(op, "setrights")) {
        printf("%d", __wasi_fd_fdstat_set_rights(num(1), num(2), num(3)));
    } else if (!strcmp(op, "allocate")) {
        printf("%d", __wasi_fd_allocate(num(1), num(2), num(3)));
    } else if (!strcmp(op, "advise")) {
        printf("%d", __wasi_fd_advise(num(1), num(2), num(3), num(4)));
    } else if (!strcmp(op, "sync")) {
        printf("%d %d", __wasi_fd_sync(num(1)), __wasi_fd_datasync(num(1)));
    } else if (!strcmp(op, "clock")) {
        __wasi_timestamp_t t = 0, r = 0;
        e = __wasi_clock_time_get(num(1), 1, &t);
        __wasi_errno_t e2 = __wasi_clock_res_get(num(1), &r);
        printf("%d %llu %d %llu", e, (unsigned long long)t, e2, (unsigned long long)r);
    } else if (!strcmp(op, "random")) {
        e = __wasi_random_get(buf, num(1));
        printf("%d ", e);
        hex(buf, num(1));
    } else if (!strcmp(op, "poll")) {
        /* poll|clock_ns|abs(0/1)|fd_read(-1 none)|fd_write(-1 none) : prints events */
        __wasi_subscription_t subs[3];
        __wasi_event_t ev[3];
        __wasi_size_t n = 0, ns = 0;
        memset(subs, 0, sizeof subs);
        if (strcmp(str(1), "-")) {
            subs[ns].userdata = 100;
            subs[ns].u.tag = __WASI_EVENTTYPE_CLOCK;
            subs[ns].u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
            uint64_t t = num(1);
            if (num(2)) {
                __wasi_timestamp_t now = 0;
                (void)__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &now);
                t += now;
                subs[ns].u.u.clock.flags = __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME;
            }
            subs[ns++].u.u.clock.timeout = t;
        }
        if (strcmp(str(3), "-")) {
            subs[ns].userdata = 200;
            subs[ns].u.tag = __WASI_EVENTTYPE_FD_READ;
            subs[ns++].u.u.fd_read.file_descriptor = num(3);
        }
        if (strcmp(str(4), "-")) {
            subs[ns].userdata = 300;
            subs[ns].u.tag = __WASI_EVENTTYPE_FD_WRITE;
            subs[ns++].u.u.fd_write.file_descriptor = num(4);
        }
        e = __wasi_poll_oneoff(subs, ev, ns, &n);
        printf("%d %u", e, (unsigned)n);
        for (__wasi_size_t i = 0; i < n && !e; i++)
            printf(" %llu:%u:%u:%llu:%u", (unsigned long long)ev[i].userdata, ev[i].error,
                   ev[i].type, (unsigned long long)ev[i].fd_readwrite.nbytes,
                   ev[i].fd_readwrite.flags);
    } else if (!strcmp(op, "sock")) {
        /* sock|fd : every sock_* call on fd */
        __wasi_fd_t nfd;
        __wasi_iovec_t iov = {buf, 16};
        __wasi_ciovec_t ciov = {buf, 16};
        __wasi_size_t n;
        __wasi_roflags_t rf;
        printf("%d %d %d %d", __wasi_sock_accept(num(1), 0, &nfd),
               __wasi_sock_recv(num(1), &iov, 1, 0, &n, &rf),
               __wasi_sock_send(num(1), &ciov, 1, 0, &n), __wasi_sock_shutdown(num(1), 3));
    } else if (!strcmp(op, "misc")) {
        printf("%d %d", __wasi_sched_yield(), raw_proc_raise(num(1)));
    } else if (!strcmp(op, "exit")) {
        fflush(stdout);
        __wasi_proc_exit(num(1));
    } else {
        printf("unknown");
    }
    printf("\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) run(argv[i]);
    return 0;
}
