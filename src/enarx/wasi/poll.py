"""``poll_oneoff``: clock subscriptions (relative and absolute) and fd readiness.

A mixin of :class:`enarx.wasi.host.WasiHost`. Handles without a host fd (files, null) are
always ready, as on Linux; handles with one (stdio, sockets) are waited on with
``poll(2)``. A wait never runs past the run's deadline: reaching it stops the guest.
"""

from __future__ import annotations

import math
import select
import time
from typing import TYPE_CHECKING

from enarx.wasi import abi
from enarx.wasi.abi import (
    EVENT,
    SUBSCRIPTION_CLOCK,
    SUBSCRIPTION_FD,
    SUBSCRIPTION_HEAD,
    SUBSCRIPTION_SIZE,
    U32,
    Errno,
)
from enarx.wasi.guestmem import view

if TYPE_CHECKING:
    from enarx.wasi.fdtable import FdTable, Handle

__all__ = ["MAX_SUBSCRIPTIONS", "Event", "PollCalls"]

# Each subscription costs the host a few Python objects; without a cap a guest could make
# it allocate several times its own memory in one call. Linux poll(2) likewise refuses more
# fds than RLIMIT_NOFILE with EINVAL; 65536 is far above what the fd table can hold.
MAX_SUBSCRIPTIONS = 1 << 16

# poll(2) and sleep() take no more than this (ms); a longer wait is several rounds.
_MAX_WAIT_MS = 1 << 30

# (userdata, errno, eventtype, nbytes, flags)
Event = tuple[int, int, int, int, int]
_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT
_HUP = select.POLLHUP | select.POLLERR


class PollCalls:
    fds: FdTable

    def check_deadline(self) -> float | None:  # provided by WasiHost
        raise NotImplementedError

    def _poll_oneoff(
        self, mv: memoryview, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int
    ) -> int:
        if nsubs == 0 or nsubs > MAX_SUBSCRIPTIONS:
            return Errno.INVAL
        view(mv, in_ptr, SUBSCRIPTION_SIZE * nsubs)
        view(mv, out_ptr, EVENT.size * nsubs)
        now = time.monotonic_ns()
        events: list[Event] = []
        clocks: list[tuple[int, int]] = []  # (monotonic deadline ns, userdata)
        waits: list[tuple[int, int, Handle, int]] = []  # (userdata, type, handle, host fd)
        for i in range(nsubs):
            base = in_ptr + SUBSCRIPTION_SIZE * i
            userdata, tag = SUBSCRIPTION_HEAD.unpack_from(mv, base)
            if tag == abi.EVENTTYPE_CLOCK:
                cid, timeout, _precision, flags = SUBSCRIPTION_CLOCK.unpack_from(mv, base + 16)
                absolute = flags & abi.SUBCLOCK_ABSTIME
                if cid == abi.CLOCK_MONOTONIC:
                    due = timeout if absolute else now + timeout
                elif cid == abi.CLOCK_REALTIME:
                    due = now + (timeout - time.time_ns()) if absolute else now + timeout
                else:
                    events.append((userdata, Errno.INVAL, tag, 0, 0))
                    continue
                clocks.append((due, userdata))
            elif tag in (abi.EVENTTYPE_FD_READ, abi.EVENTTYPE_FD_WRITE):
                (fd,) = SUBSCRIPTION_FD.unpack_from(mv, base + 16)
                h = self.fds.lookup(fd)
                if h is None:
                    events.append((userdata, Errno.BADF, tag, 0, 0))
                    continue
                if not h.rights_base & abi.RIGHT_POLL_FD_READWRITE:
                    events.append((userdata, Errno.NOTCAPABLE, tag, 0, 0))
                    continue
                host_fd = h.poll_fileno()
                if host_fd is None:
                    n = h.nbytes_readable() if tag == abi.EVENTTYPE_FD_READ else 0
                    events.append((userdata, 0, tag, n, 0))
                elif tag == abi.EVENTTYPE_FD_READ and (n := h.pending()):
                    events.append((userdata, 0, tag, n, 0))  # buffered: the fd stays quiet
                else:
                    waits.append((userdata, tag, h, host_fd))
            else:
                return Errno.INVAL
        events.extend(self._wait(clocks, waits, block=not events))
        for i, (userdata, err, tag, nbytes, flags) in enumerate(events):
            EVENT.pack_into(mv, out_ptr + EVENT.size * i, userdata, err, tag, nbytes, flags)
        U32.pack_into(mv, nevents_ptr, len(events))
        return 0

    def _wait(
        self,
        clocks: list[tuple[int, int]],
        waits: list[tuple[int, int, Handle, int]],
        block: bool,
    ) -> list[Event]:
        poller = select.poll()
        masks: dict[int, int] = {}  # one fd read and written (libc: POLLIN|POLLOUT): both
        for _ud, tag, _h, host_fd in waits:
            masks[host_fd] = masks.get(host_fd, 0) | (
                _READ if tag == abi.EVENTTYPE_FD_READ else _WRITE
            )
        for host_fd, mask in masks.items():
            poller.register(host_fd, mask)
        earliest = min((due for due, _ in clocks), default=None)
        while True:
            if not block:
                timeout_ms: float | None = 0
            elif earliest is None:
                timeout_ms = None
            else:
                timeout_ms = max(0, math.ceil((earliest - time.monotonic_ns()) / 1e6))
            if timeout_ms is not None:
                timeout_ms = min(timeout_ms, _MAX_WAIT_MS)  # "forever" as UINT64_MAX ns
            left = self.check_deadline() if block else None
            if left is not None and (timeout_ms is None or timeout_ms > left * 1e3):
                timeout_ms = math.ceil(left * 1e3)
            ready = dict(poller.poll(timeout_ms)) if waits else _sleep(timeout_ms)
            out: list[Event] = []
            for ud, tag, h, host_fd in waits:
                rev = ready.get(host_fd, 0)
                if tag == abi.EVENTTYPE_FD_READ and rev & (_READ | _HUP):
                    flags = abi.EVENT_FD_READWRITE_HANGUP if rev & _HUP and not rev & _READ else 0
                    out.append((ud, 0, tag, h.nbytes_readable(), flags))
                elif tag == abi.EVENTTYPE_FD_WRITE and rev & (_WRITE | _HUP):
                    flags = abi.EVENT_FD_READWRITE_HANGUP if rev & _HUP else 0
                    out.append((ud, 0, tag, 0, flags))
            now = time.monotonic_ns()
            out.extend((ud, 0, abi.EVENTTYPE_CLOCK, 0, 0) for due, ud in clocks if due <= now)
            if out or not block:
                return out
            # Nothing yet: either poll woke early, or the run's deadline cut the wait short
            # (check_deadline raises on the next round if so).


def _sleep(timeout_ms: float | None) -> dict[int, int]:
    if timeout_ms is None:  # no clocks, no fds: cannot happen (nsubs > 0), never block forever
        return {}
    time.sleep(timeout_ms / 1e3)
    return {}
