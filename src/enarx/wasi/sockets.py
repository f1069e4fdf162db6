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
import time
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from enarx.wasi import abi
from enarx.wasi.abi import Errno, Filetype, WasiError, from_oserror
from enarx.wasi.fdtable import Handle
from enarx.wasi.guestmem import advance

__all__ = ["DeadlineCheck", "TcpListener", "TcpStream", "TlsStream"]

#: Returns seconds left before the run's deadline (None: none); raises once it is past.
DeadlineCheck = Callable[[], float | None]

_TLS_RECORD = 16384  # the largest TLS plaintext record
_TLS_CHUNK = 65536  # plaintext encrypted per step of a blocking write
_TLS_BUF = 262144  # ciphertext taken from the socket per recv
_SLICE = 1.0  # seconds per blocking wait slice when a deadline is set
_T = TypeVar("_T")
_P = ParamSpec("_P")


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

    def _read_call(self, op: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a receiving call (recv, accept) on the non-blocking host socket as the
        guest's fd mode asks: wait while it would block (or raise AGAIN), and map host
        errors to WASI errnos."""
        while True:
            try:
                return op(*args, **kwargs)
            except BlockingIOError:
                self.wait(write=False)
            except InterruptedError:
                continue
            except OSError as e:
                raise from_oserror(e) from None

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
                conn, _addr = self._read_call(self.sock.accept)
                break
            except WasiError as e:
                # A connection reset before we took it is not the listener's failure.
                if e.errno in (Errno.CONNABORTED, Errno.PROTO):
                    continue
                raise
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
        if len(bufs) == 1:
            return self._read_call(self.sock.recv_into, bufs[0])
        return self._read_call(os.readv, self._fd, bufs)

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
            pending = advance(pending, n)

    def sock_recv(self, bufs: Sequence[memoryview], riflags: int) -> tuple[int, int]:
        if riflags & ~(abi.RIFLAG_RECV_PEEK | abi.RIFLAG_RECV_WAITALL):
            raise WasiError(Errno.INVAL)
        if riflags & abi.RIFLAG_RECV_PEEK:
            if not bufs:
                return 0, 0
            return self._read_call(self.sock.recv_into, bufs[0], 0, socket.MSG_PEEK), 0
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


def _read_all(read: Callable[[Sequence[memoryview]], int], bufs: Sequence[memoryview]) -> int:
    """MSG_WAITALL: fill every buffer or stop at EOF."""
    total, want, rest = 0, sum(len(b) for b in bufs), list(bufs)
    while total < want:
        n = read(rest)
        if n == 0:
            break
        total += n
        rest = advance(rest, n)
    return total


class TlsStream(_SocketBase):
    """TLS over a connected socket: the guest reads and writes plaintext.

    OpenSSL works on memory BIOs that only this class fills and drains, so no TLS call
    ever touches the socket behind our back. (``SSLSocket.unwrap()`` reads from the socket
    after sending close_notify and destroys application data already there, which breaks
    half-close.) Ciphertext the kernel does not take at once waits in ``_wbuf``; non-blocking
    writes encrypt one record at a time and stop while anything waits, so at most one record
    is held on the guest's behalf.
    """

    def __init__(
        self, sock: socket.socket, obj: ssl.SSLObject, inc: ssl.MemoryBIO, out: ssl.MemoryBIO,
        fdflags: int,
    ) -> None:  # fmt: skip
        super().__init__(sock, fdflags)
        self.obj = obj
        self._in = inc
        self._out = out
        self._wbuf = bytearray()  # ciphertext not yet taken by the kernel
        self._handshaken = False
        self._peeked = b""  # plaintext read ahead (MSG_PEEK, shutdown), served first
        self._rd_shut = False
        self._wr_shut = False

    @classmethod
    def server(cls, conn: socket.socket, ctx: ssl.SSLContext, fdflags: int) -> TlsStream:
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        stream = cls(conn, ctx.wrap_bio(inc, out, server_side=True), inc, out, fdflags)
        # The ClientHello is often already here: answer it now, never wait.
        with contextlib.suppress(ssl.SSLError, OSError, WasiError):
            stream._fill()
            stream._handshake_step()
        return stream

    @classmethod
    def client(
        cls, conn: socket.socket, ctx: ssl.SSLContext, server_hostname: str, timeout: float
    ) -> TlsStream:
        """Connect-side TLS; the handshake completes here (raises ssl.SSLError/OSError)."""
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_side=False, server_hostname=server_hostname)
        stream = cls(conn, obj, inc, out, 0)
        end = time.monotonic() + timeout
        stream.deadline_check = lambda: _left(end)
        try:
            while True:
                try:
                    stream._handshake_step()
                    break
                except ssl.SSLWantReadError:
                    stream._flush(block=True)
                    if not stream._fill():
                        stream.wait(write=False)
        finally:
            stream.deadline_check = None
        return stream

    # --- moving ciphertext ------------------------------------------------------------
    def _fill(self) -> bool:
        """Feed what the socket holds into OpenSSL; False when nothing was there."""
        try:
            data = self.sock.recv(_TLS_BUF)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT):
                raise from_oserror(e) from None
            data = b""  # a reset peer is a closed peer
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        return True

    def _flush(self, block: bool) -> bool:
        """Send pending ciphertext; True when none is left."""
        if self._out.pending:
            self._wbuf += self._out.read()
        while self._wbuf:
            try:
                n = self.sock.send(self._wbuf)
            except (BlockingIOError, InterruptedError):
                if not block:
                    return False
                self.wait(write=True)
                continue
            except OSError as e:
                self._wbuf.clear()
                raise from_oserror(e) from None
            del self._wbuf[:n]
        return True

    def _handshake_step(self) -> None:
        try:
            self.obj.do_handshake()
        finally:
            self._flush(block=False)
        self._handshaken = True

    def _call(self, op: Callable[[], int]) -> int:
        """Run an SSL operation to completion, feeding it from the socket as it asks."""
        while True:
            try:
                if not self._handshaken:
                    self._handshake_step()
                n = op()
                if self._out.pending:
                    self._flush(block=not self.nonblocking)
                return n
            except ssl.SSLWantReadError:
                # Our handshake flight must be out before we can expect an answer.
                self._flush(block=not self.nonblocking)
                if not self._fill():
                    self.wait(write=False)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0
            except ssl.SSLError:
                # Bad handshake (wrong client cert, not TLS, protocol error): the
                # connection is unusable, as if the peer had aborted it.
                with contextlib.suppress(OSError, WasiError):
                    self._flush(block=False)  # let the peer see our alert
                raise WasiError(Errno.CONNABORTED) from None

    # --- reading ---------------------------------------------------------------------
    def read(self, bufs: Sequence[memoryview]) -> int:
        if self._rd_shut:
            return 0
        if self._peeked:
            return self._take_peeked(bufs)
        buf = bufs[0] if len(bufs) == 1 else next((b for b in bufs if len(b)), None)
        if buf is None or not len(buf):
            return 0
        obj = self.obj
        n = self._call(lambda: _read_into(obj, buf))
        # Take what is already here too, so one guest read can span several records.
        while 0 < n < len(buf):
            try:
                n += _read_into(obj, buf[n:])
            except ssl.SSLWantReadError:
                if not self._fill():
                    break
            except ssl.SSLError:
                break  # reported by the next read
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
            if not self._peeked and not self._rd_shut and want:
                tmp = bytearray(min(want, _TLS_RECORD))
                n = self._call(lambda: _read_into(self.obj, tmp))
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
    def write(self, bufs: Sequence[memoryview]) -> int:
        if self._wr_shut:
            raise WasiError(Errno.PIPE)
        if not self._handshaken:
            self._call(lambda: 0)
        views = [b for b in bufs if len(b)]
        if len(views) > 1 and sum(len(b) for b in views) <= _TLS_CHUNK:
            views = [memoryview(b"".join(views))]  # a small gather: one record, not many
        total = 0
        for data in views:  # a large gather: buffer by buffer, never one joined copy
            n = self._write_view(data)
            total += n
            if n < len(data):
                break
        if not total and views:
            raise WasiError(Errno.AGAIN)  # only a non-blocking write takes nothing
        return total

    def _write_view(self, data: memoryview) -> int:
        total = 0
        if self.nonblocking:
            while total < len(data) and self._flush(block=False):
                total += self._encrypt(data[total : total + _TLS_RECORD])
            self._flush(block=False)
            return total
        while total < len(data):
            total += self._encrypt(data[total : total + _TLS_CHUNK])
            self._flush(block=True)
        return total

    def _encrypt(self, chunk: memoryview) -> int:
        try:
            n = self.obj.write(chunk)  # a memory BIO takes everything
        except ssl.SSLError:
            raise WasiError(Errno.CONNABORTED) from None
        self._wbuf += self._out.read()
        return n

    def sock_send(self, bufs: Sequence[memoryview], siflags: int) -> int:
        return self.write(bufs)

    # --- shutdown, readiness, close --------------------------------------------------
    def sock_shutdown(self, how: int) -> None:
        if how & abi.SDFLAG_WR and not self._wr_shut:
            with contextlib.suppress(OSError, WasiError):
                self._flush(block=not self.nonblocking)
            self._send_close_notify()
            self._wr_shut = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        if how & abi.SDFLAG_RD:
            self._rd_shut = True

    def _send_close_notify(self) -> None:
        """Send close_notify and keep reading (TLS 1.3 half-close)."""
        if not self._handshaken:
            return
        # OpenSSL reads on while waiting for the peer's close_notify and would drop
        # application data already decryptable: move that into the read-ahead first.
        self._drain_into_peeked()
        with contextlib.suppress(ssl.SSLError, ValueError):
            self.obj.unwrap()  # an SSLObject keeps its state: reads still work after it
        with contextlib.suppress(OSError, WasiError):
            self._flush(block=False)

    def _drain_into_peeked(self) -> None:
        parts = [self._peeked]
        buf = bytearray(_TLS_RECORD)
        while True:
            try:
                n = _read_into(self.obj, buf)
            except ssl.SSLError:
                break
            if n == 0:
                break
            parts.append(bytes(buf[:n]))
        self._peeked = b"".join(parts)

    def pending(self) -> int:
        """Plaintext already decrypted inside OpenSSL: readable though the fd is quiet."""
        if self._rd_shut:
            return 0
        if self._wbuf:  # poll is about to wait: let waiting ciphertext go first
            with contextlib.suppress(OSError, WasiError):
                self._flush(block=False)
        return len(self._peeked) + self.obj.pending()

    def nbytes_readable(self) -> int:
        return self.pending()

    def close(self) -> None:
        if self.sock.fileno() >= 0 and self._handshaken:
            if not self._wr_shut:
                # On a memory BIO unwrap() writes close_notify, then raises SSLWantReadError
                # while waiting for the peer's: the flush below must still run.
                with contextlib.suppress(ssl.SSLError, ValueError):
                    self.obj.unwrap()
            with contextlib.suppress(OSError, WasiError):
                self._flush(block=False)
        self.sock.close()


def _read_into(obj: ssl.SSLObject, buf: memoryview | bytearray) -> int:
    """``SSLObject.read`` into ``buf``: with a buffer it returns a count, not bytes."""
    n: object = obj.read(len(buf), buf)
    assert isinstance(n, int)
    return n


def _left(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError("TLS handshake timed out")
    return left
