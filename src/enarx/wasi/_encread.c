/* Native reads of files of encrypted pre-opens (enarx.wasi.encnative drives this file;
 * enarx.wasi.native builds it into one library with _fastio.c).
 *
 * The read side of enarx.encdir's file format (enarx/encdir/fileformat.py): block i of a
 * file with block size B sits at PREFIX + i * (B + 28) as nonce (12) | AES-256-GCM
 * ciphertext | tag (16), with associated data file id (16) | i (u64 LE) | version_i (u64
 * LE); version 0 is a hole (zeros, no bytes). Python (enarx.wasi.encnative) keeps one
 * `struct encfile` per open file in step with its FileState: `valid` is cleared before
 * anything changes the file (a write, a resize, a commit, the close) and set again, with
 * the new length and versions, only while no block is pending in Python. A block that fails
 * authentication is EIO and its bytes are wiped from the guest's buffer. */

#include "_fastio.h"

#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define ENC_PREFIX 24
#define ENC_NONCE 12
#define ENC_TAG 16
#define EVP_CTRL_GCM_SET_TAG 0x11

typedef void *(*evp_ctx_new_t)(void);
typedef void (*evp_ctx_free_t)(void *);
typedef const void *(*evp_cipher_t)(void);
typedef int (*evp_init_t)(void *, const void *, void *, const uint8_t *, const uint8_t *);
typedef int (*evp_update_t)(void *, uint8_t *, int *, const uint8_t *, int);
typedef int (*evp_final_t)(void *, uint8_t *, int *);
typedef int (*evp_ctrl_t)(void *, int, int, void *);

struct encfile {
    evp_ctx_new_t ctx_new;
    evp_ctx_free_t ctx_free;
    evp_cipher_t aes_256_gcm;
    evp_init_t init;
    evp_update_t update;
    evp_final_t final;
    evp_ctrl_t ctrl;
    void *ctx; /* keyed once with the file key; each block sets only its nonce */
    int valid;
    int hfd;
    uint64_t length;
    uint64_t block;
    uint8_t file_id[16];
    uint64_t *versions;
    size_t nversions, cap;
    uint8_t *scratch; /* one sealed block, for blocks the guest reads only part of */
    size_t scratch_len;
};

/* fns: EVP_CIPHER_CTX_new, EVP_CIPHER_CTX_free, EVP_aes_256_gcm, EVP_DecryptInit_ex,
 * EVP_DecryptUpdate, EVP_DecryptFinal_ex, EVP_CIPHER_CTX_ctrl. */
struct encfile *fastio_enc_new(void **fns, const uint8_t *key) {
    struct encfile *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->ctx_new = (evp_ctx_new_t)fns[0];
    e->ctx_free = (evp_ctx_free_t)fns[1];
    e->aes_256_gcm = (evp_cipher_t)fns[2];
    e->init = (evp_init_t)fns[3];
    e->update = (evp_update_t)fns[4];
    e->final = (evp_final_t)fns[5];
    e->ctrl = (evp_ctrl_t)fns[6];
    e->hfd = -1;
    e->ctx = e->ctx_new();
    if (!e->ctx || e->init(e->ctx, e->aes_256_gcm(), NULL, key, NULL) != 1) {
        if (e->ctx) e->ctx_free(e->ctx);
        free(e);
        return NULL;
    }
    return e;
}

void fastio_enc_free(struct encfile *e) {
    if (!e) return;
    e->ctx_free(e->ctx); /* OpenSSL clears the key schedule */
    free(e->versions);
    if (e->scratch) {
        explicit_bzero(e->scratch, e->scratch_len);
        free(e->scratch);
    }
    free(e);
}

void fastio_enc_stale(struct encfile *e) { e->valid = 0; }

int enc_valid(const struct encfile *e) { return e->valid; }

/* The file as it is on the host now; 1 when the C side may serve it. */
int fastio_enc_set(struct encfile *e, int hfd, uint64_t length, uint64_t block,
                   const uint8_t *file_id, const uint64_t *versions, size_t n) {
    e->valid = 0;
    if (hfd < 0 || block == 0 || block > (1u << 20) || n != (length + block - 1) / block)
        return 0;
    if (n > e->cap) {
        uint64_t *v = realloc(e->versions, n * sizeof *v);
        if (!v) return 0;
        e->versions = v;
        e->cap = n;
    }
    if (e->scratch_len < block + ENC_NONCE + ENC_TAG) {
        uint8_t *b = malloc(block + ENC_NONCE + ENC_TAG);
        if (!b) return 0;
        if (e->scratch) {
            explicit_bzero(e->scratch, e->scratch_len);
            free(e->scratch);
        }
        e->scratch = b;
        e->scratch_len = block + ENC_NONCE + ENC_TAG;
    }
    if (n) memcpy(e->versions, versions, n * sizeof *versions);
    e->nversions = n;
    e->hfd = hfd;
    e->length = length;
    e->block = block;
    memcpy(e->file_id, file_id, 16);
    e->valid = 1;
    return 1;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Decrypt block i (n bytes at `data`, in place) under its nonce and tag: 1 if authentic. */
static int open_block(struct encfile *e, uint64_t i, const uint8_t *nonce, uint8_t *data,
                      size_t n, uint8_t *tag) {
    uint8_t aad[32], fin[16];
    int outl;
    memcpy(aad, e->file_id, 16);
    put_le64(aad + 16, i);
    put_le64(aad + 24, e->versions[i]);
    return e->init(e->ctx, NULL, NULL, NULL, nonce) == 1 &&
           e->update(e->ctx, NULL, &outl, aad, sizeof aad) == 1 &&
           (n == 0 || e->update(e->ctx, data, &outl, data, (int)n) == 1) &&
           e->ctrl(e->ctx, EVP_CTRL_GCM_SET_TAG, ENC_TAG, tag) == 1 &&
           e->final(e->ctx, fin, &outl) > 0;
}

/* Read exactly `want` host bytes at `off` into `iov`: 0, or INTERRUPTED, or -(host errno);
 * EIO when the file ends first (cut by the host). */
static int64_t pread_full(int fd, struct iovec *iov, int n, size_t want, uint64_t off) {
    while (want) {
        ssize_t r = preadv(fd, iov, n, (off_t)off);
        if (r < 0) return errno == EINTR ? INTERRUPTED : -(int64_t)errno;
        if (r == 0) return -(int64_t)EIO;
        want -= (size_t)r;
        off += (uint64_t)r;
        advance(&iov, &n, (size_t)r);
    }
    return 0;
}

/* Copy `len` bytes from `src` (NULL: zeros) to the guest's iovecs from (*k, *koff) on. */
static void scatter(struct iovec *iov, int *k, size_t *koff, const uint8_t *src, size_t len) {
    while (len) {
        size_t room = iov[*k].iov_len - *koff, m = room < len ? room : len;
        uint8_t *dst = (uint8_t *)iov[*k].iov_base + *koff;
        if (src) {
            memcpy(dst, src, m);
            src += m;
        } else {
            memset(dst, 0, m);
        }
        len -= m;
        *koff += m;
        if (*koff == iov[*k].iov_len) {
            (*k)++;
            *koff = 0;
        }
    }
}

/* Plaintext [pos, pos + total) (clipped at the file's end) into `iov`: the byte count, or
 * -(host errno) (EIO: a block failed authentication or is cut), or INTERRUPTED. */
int64_t enc_read(struct encfile *e, uint64_t pos, struct iovec *iov, int n,
                        size_t total) {
    if (pos >= e->length || total == 0) return 0;
    uint64_t want = e->length - pos < total ? e->length - pos : total, done = 0;
    int k = 0;
    size_t koff = 0;
    while (k < n && iov[k].iov_len == 0) k++;
    while (done < want) {
        uint64_t off = pos + done, i = off / e->block, within = off % e->block;
        uint64_t blen = e->length - i * e->block < e->block ? e->length - i * e->block : e->block;
        uint64_t take = blen - within < want - done ? blen - within : want - done;
        uint64_t host = ENC_PREFIX + i * (e->block + ENC_NONCE + ENC_TAG);
        if (e->versions[i] == 0) { /* a hole */
            scatter(iov, &k, &koff, NULL, take);
        } else if (within == 0 && take == blen && iov[k].iov_len - koff >= blen) {
            /* a whole block into one guest buffer: read it there, decrypt in place */
            uint8_t nonce[ENC_NONCE], tag[ENC_TAG];
            uint8_t *dst = (uint8_t *)iov[k].iov_base + koff;
            struct iovec rv[3] = {{nonce, ENC_NONCE}, {dst, blen}, {tag, ENC_TAG}};
            int64_t r = pread_full(e->hfd, rv, 3, blen + ENC_NONCE + ENC_TAG, host);
            if (r == 0 && !open_block(e, i, nonce, dst, blen, tag)) r = -(int64_t)EIO;
            if (r != 0) {
                memset(dst, 0, blen); /* never leave what the host shaped */
                return r == INTERRUPTED && done ? (int64_t)done : r;
            }
            koff += blen;
            if (koff == iov[k].iov_len) {
                k++;
                koff = 0;
            }
        } else { /* part of a block, or a block split between guest buffers */
            uint8_t *b = e->scratch;
            size_t sealed = blen + ENC_NONCE + ENC_TAG;
            struct iovec rv[1] = {{b, sealed}};
            int64_t r = pread_full(e->hfd, rv, 1, sealed, host);
            if (r == 0 && !open_block(e, i, b, b + ENC_NONCE, blen, b + ENC_NONCE + blen))
                r = -(int64_t)EIO;
            if (r == 0) scatter(iov, &k, &koff, b + ENC_NONCE + within, take);
            explicit_bzero(b, sealed);
            if (r != 0) return r == INTERRUPTED && done ? (int64_t)done : r;
        }
        done += take;
    }
    return (int64_t)want;
}

/* enc_read into one buffer, for enarx.wasi.encnative's self-test and the tests. */
int64_t fastio_enc_pread(struct encfile *e, uint8_t *buf, size_t len, uint64_t pos) {
    if (!e->valid) return -(int64_t)ESTALE;
    struct iovec iov[1] = {{buf, len}};
    int64_t r = enc_read(e, pos, iov, 1, len);
    return r == INTERRUPTED ? -(int64_t)EINTR : r;
}

