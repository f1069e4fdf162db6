"""Socket handles: TCP listeners and streams, and the same with TLS terminated in the Keep.

The Keep opens every socket before the workload starts (:mod:`enarx.keep.sockets`); the
guest only accepts, reads, writes, polls and shuts down. Host sockets are always
non-blocking: a guest fd in blocking mode waits here (in slices, so the run's deadline
still applies), a guest fd with ``FDFLAG_NONBLOCK`` gets ``EAGAIN``.

TLS uses :class:`ssl.SSLSocket` over the non-blocking socket (OpenSSL does the record I/O
in C). Server handshakes are lazy: an accepted connection is handed to the guest at once
and the handshake advances inside its first reads/writes, so a slow or hostile client never
stalls ``sock_accept``. A record OpenSSL could not flush is kept (at most one) and counted
as written, as the kernel would buffer it; it is flushed before any later write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import ssl
import termios
from collections.abc import Callable, Sequence

from enarx.wasi import abi
from enarx.wasi.abi import Errno, Filetype, WasiError, from_oserror
from enarx.wasi.fdtable import Handle

#: Returns seconds left before the run's deadline (None: none); raises once it is past.
DeadlineCheck = Callable[[], float | None]

_TLS_RECORD = 16384  # the largest TLS plaintext record
_TLS_CHUNK = 65536  # per SSL_write; the most kept (copied) when OpenSSL cannot flush
_SLICE = 1.0  # seconds per blocking wait slice when a deadline is set


class _SocketBase(Handle):
    filetype = Filetype.SOCKET_STREAM
    rights_base = abi.RIGHTS_SOCKET
    rights_inheriting = abi.RIGHTS_SOCKET

    def __init__(self, sock: socket.socket, fdflags: int = 0) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fdflags = fdflags
        self.deadline_check: DeadlineCheck | None = None
        self._pollers: dict[bool, select.poll] = {}  # reused: one per direction

    def attach_deadline(self, check: DeadlineCheck) -> None:
        """Called by the WASI host so blocking waits end at the run's deadline."""
        self.deadline_check = check

    @property
    def nonblocking(self) -> bool:
        return bool(self.fdflags & abi.FDFLAG_NONBLOCK)

    def set_fdflags(self, flags: int) -> None:
        # Only NONBLOCK means anything for a socket; the host socket stays non-blocking.
        self.fdflags = flags & abi.FDFLAG_NONBLOCK

    def poll_fileno(self) -> int | None:
        fd = self.sock.fileno()
        return fd if fd >= 0 else None

    def wait(self, write: bool) -> None:
        """Block until the host socket is ready, or raise AGAIN for a non-blocking fd."""
        if self.nonblocking:
            raise WasiError(Errno.AGAIN)
        poller = self._pollers.get(write)
        if poller is None:
            fd = self.sock.fileno()
            if fd < 0:
                raise WasiError(Errno.BADF)
            poller = self._pollers[write] = select.poll()
            poller.register(fd, select.POLLOUT if write else select.POLLIN)
        while True:
            left = self.deadline_check() if self.deadline_check else None
            timeout = None if left is None else max(1, int(min(left, _SLICE) * 1000))
            if poller.poll(timeout):
                return

    def close(self) -> None:
        self.sock.close()


class TcpListener(_SocketBase):
    """A listening socket; every accepted connection becomes a new guest fd."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(sock)
        self.tls = tls

    def sock_accept(self, flags: int) -> Handle:
        while True:
            try:
                conn, _addr = self.sock.accept()
                break
            except BlockingIOError:
                self.wait(write=False)
            except InterruptedError:
                continue
            except OSError as e:
                # A connection reset before we took it is not the listener's failure.
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise from_oserror(e) from None
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nb = flags & abi.FDFLAG_NONBLOCK
        stream: _SocketBase = (
            TcpStream(conn, nb) if self.tls is None else TlsStream.server(conn, self.tls, nb)
        )
        stream.deadline_check = self.deadline_check
        return stream

    def read(self, bufs: Sequence[memoryview]) -> int:
        raise WasiError(Errno.NOTCONN)

    def write(self, bufs: Sequence[memoryview]) -> int:
        raise WasiError(Errno.NOTCONN)

    def sock_recv(self, bufs: Sequence[memoryview], riflags: int) -> tuple[int, int]:
        raise WasiError(Errno.NOTCONN)

    def sock_send(self, bufs: Sequence[memoryview], siflags: int) -> int:
        raise WasiError(Errno.NOTCONN)

    def sock_shutdown(self, how: int) -> None:
        raise WasiError(Errno.NOTCONN)


def _shut_how(how: int) -> int:
    if how == abi.SDFLAG_RD:
        return socket.SHUT_RD
    if how == abi.SDFLAG_WR:
        return socket.SHUT_WR
    return socket.SHUT_RDWR


class TcpStream(_SocketBase):
    """A connected plaintext TCP socket (accepted or pre-connected)."""

    def __init__(self, sock: socket.socket, fdflags: int = 0) -> None:
        super().__init__(sock, fdflags)
        self._fd = sock.fileno()

    def read(self, bufs: Sequence[memoryview]) -> int:
        while True:
            try:
                if len(bufs) == 1:
                    return self.sock.recv_into(bufs[0])
                return os.readv(self._fd, bufs)
            except BlockingIOError:
                self.wait(write=False)
            except InterruptedError:
                continue
            except OSError as e:
                raise from_oserror(e) from None

    def write(self, bufs: Sequence[memoryview]) -> int:
        total = 0
        want = sum(len(b) for b in bufs)
        if not want:
            return 0
        pending = [b for b in bufs if len(b)]
        while True:
            try:
                n = os.writev(self._fd, pending) if len(pending) > 1 else self.sock.send(pending[0])
            except BlockingIOError:
                if total:
                    return total  # a partial write is a valid answer in either mode
                self.wait(write=True)
                continue
            except InterruptedError:
                continue
            except OSError as e:
                if total:
                    return total
                raise from_oserror(e) from None
            total += n
            if total >= want or self.nonblocking:
                return total
            pending = _advance(pending, n)

    def sock_recv(self, bufs: Sequence[memoryview], riflags: int) -> tuple[int, int]:
        if riflags & ~(abi.RIFLAG_RECV_PEEK | abi.RIFLAG_RECV_WAITALL):
            raise WasiError(Errno.INVAL)
        if riflags & abi.RIFLAG_RECV_PEEK:
            while True:
                try:
                    return self.sock.recv_into(bufs[0], len(bufs[0]), socket.MSG_PEEK), 0
                except BlockingIOError:
                    self.wait(write=False)
                except OSError as e:
                    raise from_oserror(e) from None
        if riflags & abi.RIFLAG_RECV_WAITALL:
            return _read_all(self.read, bufs), 0
        return self.read(bufs), 0

    def sock_send(self, bufs: Sequence[memoryview], siflags: int) -> int:
        return self.write(bufs)

    def sock_shutdown(self, how: int) -> None:
        try:
            self.sock.shutdown(_shut_how(how))
        except OSError as e:
            raise from_oserror(e) from None

    def nbytes_readable(self) -> int:
        try:
            buf = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int.from_bytes(buf, "little")


def _advance(bufs: list[memoryview], n: int) -> list[memoryview]:
    while bufs and n >= len(bufs[0]):
        n -= len(bufs[0])
        bufs = bufs[1:]
    if bufs and n:
        bufs = [bufs[0][n:], *bufs[1:]]
    return bufs


def _read_all(read: Callable[[Sequence[memoryview]], int], bufs: Sequence[memoryview]) -> int:
    """MSG_WAITALL: fill every buffer or stop at EOF."""
    total, want, rest = 0, sum(len(b) for b in bufs), list(bufs)
    while total < want:
        n = read(rest)
        if n == 0:
            break
        total += n
        rest = _advance(rest, n)
    return total


class TlsStream(_SocketBase):
    """TLS over a connected socket: the guest reads and writes plaintext."""

    def __init__(self, tls: ssl.SSLSocket, fdflags: int) -> None:
        super().__init__(tls, fdflags)
        self.tls = tls
        self._handshaken = False
        self._unsent: bytes | None = None  # a record accepted from the guest, not yet flushed
        self._peeked = b""  # plaintext read by MSG_PEEK, served before new records
        self._rd_shut = False
        self._wr_shut = False

    @classmethod
    def server(cls, conn: socket.socket, ctx: ssl.SSLContext, fdflags: int) -> TlsStream:
        conn.setblocking(False)
        tls = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        stream = cls(tls, fdflags)
        # The ClientHello is often already here: answer it now, never wait.
        with contextlib.suppress(ssl.SSLError, OSError):
            stream._handshake_step()
        return stream

    @classmethod
    def connected(cls, tls: ssl.SSLSocket) -> TlsStream:
        """A client connection whose handshake the Keep completed before the start."""
        stream = cls(tls, 0)
        stream._handshaken = True
        return stream

    # --- handshake and error mapping -------------------------------------------------
    def _handshake_step(self) -> None:
        self.tls.do_handshake()
        self._handshaken = True

    def _retry(self, op: Callable[[], int]) -> int:
        """Run an SSL operation, waiting (or raising AGAIN) on WANT_READ/WANT_WRITE."""
        while True:
            try:
                if not self._handshaken:
                    self._handshake_step()
                return op()
            except ssl.SSLWantReadError:
                self.wait(write=False)
            except ssl.SSLWantWriteError:
                self.wait(write=True)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0
            except ssl.SSLError:
                # Bad handshake (wrong client cert, not TLS, protocol error): the
                # connection is unusable, as if the peer had aborted it.
                raise WasiError(Errno.CONNABORTED) from None
            except InterruptedError:
                continue
            except OSError as e:
                raise from_oserror(e) from None

    # --- reading ---------------------------------------------------------------------
    def read(self, bufs: Sequence[memoryview]) -> int:
        if self._rd_shut:
            return 0
        if self._peeked:
            return self._take_peeked(bufs)
        buf = bufs[0] if len(bufs) == 1 else None
        if buf is None:
            # Scatter: read into the first non-empty buffer only (a short read is valid).
            buf = next((b for b in bufs if len(b)), None)
            if buf is None:
                return 0
        n = -1
        if self._handshaken:
            # Fast path; anything unusual is redone (and mapped) by _retry.
            with contextlib.suppress(ssl.SSLError, OSError):
                n = self.tls.recv_into(buf)
        if n < 0:
            n = self._retry(lambda: self.tls.recv_into(buf))
        # A full record suggests a bulk transfer: take the records already here too.
        while n % _TLS_RECORD == 0 and 0 < n < len(buf):
            try:
                k = self.tls.recv_into(buf[n:])
            except (ssl.SSLError, OSError):
                break
            if k == 0:
                break
            n += k
        return n

    def _take_peeked(self, bufs: Sequence[memoryview]) -> int:
        data, n = self._peeked, 0
        for b in bufs:
            k = min(len(b), len(data) - n)
            b[:k] = data[n : n + k]
            n += k
            if n == len(data):
                break
        self._peeked = data[n:]
        return n

    def sock_recv(self, bufs: Sequence[memoryview], riflags: int) -> tuple[int, int]:
        if riflags & ~(abi.RIFLAG_RECV_PEEK | abi.RIFLAG_RECV_WAITALL):
            raise WasiError(Errno.INVAL)
        if riflags & abi.RIFLAG_RECV_PEEK:
            want = sum(len(b) for b in bufs)
            if not self._peeked and not self._rd_shut:
                tmp = bytearray(max(1, min(want, _TLS_RECORD)))
                n = self._retry(lambda: self.tls.recv_into(tmp))
                self._peeked = bytes(tmp[:n])
            data, n = self._peeked, 0
            for b in bufs:
                k = min(len(b), len(data) - n)
                b[:k] = data[n : n + k]
                n += k
            return n, 0
        if riflags & abi.RIFLAG_RECV_WAITALL:
            return _read_all(self.read, bufs), 0
        return self.read(bufs), 0

    # --- writing ---------------------------------------------------------------------
    def _flush_unsent(self) -> bool:
        """Try to send the kept record; True when nothing is left."""
        data = self._unsent
        if data is None:
            return True
        try:
            self.tls.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        except ssl.SSLError:
            self._unsent = None
            raise WasiError(Errno.CONNABORTED) from None
        except OSError as e:
            self._unsent = None
            raise from_oserror(e) from None
        self._unsent = None
        return True

    def write(self, bufs: Sequence[memoryview]) -> int:
        if self._wr_shut:
            raise WasiError(Errno.PIPE)
        if not self._handshaken:
            self._retry(lambda: 0)
        while not self._flush_unsent():
            self.wait(write=True)
        data = bufs[0] if len(bufs) == 1 else memoryview(b"".join(bufs))
        total = 0
        while total < len(data):
            chunk = data[total : total + _TLS_CHUNK]
            try:
                total += self.tls.send(chunk)
                continue
            except ssl.SSLWantWriteError:
                # OpenSSL holds part of this record: it must be retried with the same
                # bytes, so keep a copy and count it as written (as a kernel buffer would).
                self._unsent = bytes(chunk)
                total += len(chunk)
            except ssl.SSLWantReadError:
                self._unsent = bytes(chunk)
                total += len(chunk)
            except ssl.SSLError:
                if total:
                    return total
                raise WasiError(Errno.CONNABORTED) from None
            except OSError as e:
                if total:
                    return total
                raise from_oserror(e) from None
            if self.nonblocking:
                return total
            while not self._flush_unsent():
                self.wait(write=True)
        return total

    def sock_send(self, bufs: Sequence[memoryview], siflags: int) -> int:
        return self.write(bufs)

    # --- shutdown, readiness, close --------------------------------------------------
    def sock_shutdown(self, how: int) -> None:
        if how & abi.SDFLAG_WR and not self._wr_shut:
            with contextlib.suppress(ssl.SSLError, OSError):
                while not self._flush_unsent():
                    self.wait(write=True)
            self._send_close_notify()
            self._wr_shut = True
            # The plain socket's shutdown: SSLSocket.shutdown would also drop the TLS state.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.tls, socket.SHUT_WR)
        if how & abi.SDFLAG_RD:
            self._rd_shut = True

    def _send_close_notify(self) -> None:
        """Send close_notify and keep reading (TLS 1.3 half-close).

        ``SSLSocket.unwrap()`` would drop the TLS state once the shutdown completes, and
        CPython's shutdown also tries to read the peer's close_notify, which may swallow
        application data already here: so first move that data into the peek buffer, then
        shut down through the SSL object itself, which stays usable for reading.
        """
        if not self._handshaken:
            return
        self._drain_into_peeked()
        obj = getattr(self.tls, "_sslobj", None)
        with contextlib.suppress(ssl.SSLError, OSError, ValueError, AttributeError):
            if obj is None:
                self.tls.unwrap()
                self._rd_shut = True  # the TLS state is gone: nothing more can be read
            else:
                obj.shutdown()

    def _drain_into_peeked(self, limit: int = 4 << 20) -> None:
        buf = bytearray(_TLS_RECORD)
        parts = [self._peeked]
        size = len(self._peeked)
        while size < limit:
            try:
                n = self.tls.recv_into(buf)
            except (ssl.SSLError, OSError):
                break
            if n == 0:
                break
            parts.append(bytes(buf[:n]))
            size += n
        self._peeked = b"".join(parts)

    def pending(self) -> int:
        """Plaintext already decrypted inside OpenSSL: readable though the fd is quiet."""
        if self._rd_shut:
            return 0
        try:
            return len(self._peeked) + self.tls.pending()
        except (ssl.SSLError, OSError, ValueError):
            return 0

    def nbytes_readable(self) -> int:
        return self.pending()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            with contextlib.suppress(ssl.SSLError, OSError):
                self._flush_unsent()
            if not self._wr_shut:
                self._send_close_notify()
        self.sock.close()
