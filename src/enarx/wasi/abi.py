"""The WASI preview1 ABI as data: errno values, rights, flags, filetypes, struct layouts.

Pure: no I/O. Values follow ``wasi_snapshot_preview1`` witx. Struct layouts are given as
``struct.Struct`` objects with the little-endian, padded layout the guest expects; their
sizes are asserted at import so a typo cannot silently corrupt guest memory.
"""

from __future__ import annotations

import errno as _e
import struct
from enum import IntEnum

__all__ = [
    "ADVICE_MAX", "CLOCK_MONOTONIC", "CLOCK_PROCESS_CPUTIME", "CLOCK_REALTIME",
    "CLOCK_THREAD_CPUTIME", "DIRENT", "EVENT", "EVENTTYPE_CLOCK", "EVENTTYPE_FD_READ",
    "EVENTTYPE_FD_WRITE", "EVENT_FD_READWRITE_HANGUP", "FDFLAGS_ALL", "FDFLAG_APPEND",
    "FDFLAG_DSYNC", "FDFLAG_NONBLOCK", "FDFLAG_RSYNC", "FDFLAG_SYNC", "FDSTAT", "FILESTAT",
    "FST_ATIM", "FST_ATIM_NOW", "FST_MTIM", "FST_MTIM_NOW", "IOVEC", "LOOKUP_SYMLINK_FOLLOW",
    "OFLAG_CREAT", "OFLAG_DIRECTORY", "OFLAG_EXCL", "OFLAG_TRUNC", "PREOPENTYPE_DIR", "PRESTAT",
    "RIFLAG_RECV_PEEK", "RIFLAG_RECV_WAITALL", "RIGHTS_ALL", "RIGHTS_DIR", "RIGHTS_DIR_READ",
    "RIGHTS_DIR_WRITE", "RIGHTS_FILE", "RIGHTS_FILE_READ", "RIGHTS_FILE_WRITE", "RIGHTS_SOCKET",
    "RIGHTS_STDIO", "RIGHT_FD_ADVISE", "RIGHT_FD_ALLOCATE", "RIGHT_FD_DATASYNC",
    "RIGHT_FD_FDSTAT_SET_FLAGS", "RIGHT_FD_FILESTAT_GET", "RIGHT_FD_FILESTAT_SET_SIZE",
    "RIGHT_FD_FILESTAT_SET_TIMES", "RIGHT_FD_READ", "RIGHT_FD_READDIR", "RIGHT_FD_SEEK",
    "RIGHT_FD_SYNC", "RIGHT_FD_TELL", "RIGHT_FD_WRITE", "RIGHT_PATH_CREATE_DIRECTORY",
    "RIGHT_PATH_CREATE_FILE", "RIGHT_PATH_FILESTAT_GET", "RIGHT_PATH_FILESTAT_SET_SIZE",
    "RIGHT_PATH_FILESTAT_SET_TIMES", "RIGHT_PATH_LINK_SOURCE", "RIGHT_PATH_LINK_TARGET",
    "RIGHT_PATH_OPEN", "RIGHT_PATH_READLINK", "RIGHT_PATH_REMOVE_DIRECTORY",
    "RIGHT_PATH_RENAME_SOURCE", "RIGHT_PATH_RENAME_TARGET", "RIGHT_PATH_SYMLINK",
    "RIGHT_PATH_UNLINK_FILE", "RIGHT_POLL_FD_READWRITE", "RIGHT_SOCK_ACCEPT",
    "RIGHT_SOCK_SHUTDOWN", "ROFLAG_RECV_DATA_TRUNCATED", "SDFLAG_RD", "SDFLAG_WR",
    "SUBCLOCK_ABSTIME", "SUBSCRIPTION_CLOCK", "SUBSCRIPTION_FD", "SUBSCRIPTION_HEAD",
    "SUBSCRIPTION_SIZE", "U8", "U16", "U32", "U64", "WHENCE_CUR", "WHENCE_END", "WHENCE_SET",
    "Errno", "Filetype", "WasiError", "from_oserror",
]


class Errno(IntEnum):
    SUCCESS = 0
    TOOBIG = 1
    ACCES = 2
    ADDRINUSE = 3
    ADDRNOTAVAIL = 4
    AFNOSUPPORT = 5
    AGAIN = 6
    ALREADY = 7
    BADF = 8
    BADMSG = 9
    BUSY = 10
    CANCELED = 11
    CHILD = 12
    CONNABORTED = 13
    CONNREFUSED = 14
    CONNRESET = 15
    DEADLK = 16
    DESTADDRREQ = 17
    DOM = 18
    DQUOT = 19
    EXIST = 20
    FAULT = 21
    FBIG = 22
    HOSTUNREACH = 23
    IDRM = 24
    ILSEQ = 25
    INPROGRESS = 26
    INTR = 27
    INVAL = 28
    IO = 29
    ISCONN = 30
    ISDIR = 31
    LOOP = 32
    MFILE = 33
    MLINK = 34
    MSGSIZE = 35
    MULTIHOP = 36
    NAMETOOLONG = 37
    NETDOWN = 38
    NETRESET = 39
    NETUNREACH = 40
    NFILE = 41
    NOBUFS = 42
    NODEV = 43
    NOENT = 44
    NOEXEC = 45
    NOLCK = 46
    NOLINK = 47
    NOMEM = 48
    NOMSG = 49
    NOPROTOOPT = 50
    NOSPC = 51
    NOSYS = 52
    NOTCONN = 53
    NOTDIR = 54
    NOTEMPTY = 55
    NOTRECOVERABLE = 56
    NOTSOCK = 57
    NOTSUP = 58
    NOTTY = 59
    NXIO = 60
    OVERFLOW = 61
    OWNERDEAD = 62
    PERM = 63
    PIPE = 64
    PROTO = 65
    PROTONOSUPPORT = 66
    PROTOTYPE = 67
    RANGE = 68
    ROFS = 69
    SPIPE = 70
    SRCH = 71
    STALE = 72
    TIMEDOUT = 73
    TXTBSY = 74
    XDEV = 75
    NOTCAPABLE = 76


class WasiError(Exception):
    """Raised inside the shim to return an errno to the guest (never escapes to the user)."""

    __slots__ = ("errno",)

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


# Host errno -> WASI errno. Anything unknown becomes EIO rather than leaking host detail.
_HOST_TO_WASI: dict[int, int] = {}
for _name in Errno.__members__:
    _host = getattr(_e, "E" + _name, None)
    if _host is not None:
        _HOST_TO_WASI[_host] = Errno[_name]
_HOST_TO_WASI[_e.E2BIG] = Errno.TOOBIG
_HOST_TO_WASI[_e.EWOULDBLOCK] = Errno.AGAIN
_HOST_TO_WASI[_e.EOPNOTSUPP] = Errno.NOTSUP


def from_oserror(exc: OSError) -> WasiError:
    """Translate a host OSError into the WASI errno the guest sees."""
    return WasiError(_HOST_TO_WASI.get(exc.errno or 0, Errno.IO))


class Filetype(IntEnum):
    UNKNOWN = 0
    BLOCK_DEVICE = 1
    CHARACTER_DEVICE = 2
    DIRECTORY = 3
    REGULAR_FILE = 4
    SOCKET_DGRAM = 5
    SOCKET_STREAM = 6
    SYMBOLIC_LINK = 7


# rights (u64 bit flags)
RIGHT_FD_DATASYNC = 1 << 0
RIGHT_FD_READ = 1 << 1
RIGHT_FD_SEEK = 1 << 2
RIGHT_FD_FDSTAT_SET_FLAGS = 1 << 3
RIGHT_FD_SYNC = 1 << 4
RIGHT_FD_TELL = 1 << 5
RIGHT_FD_WRITE = 1 << 6
RIGHT_FD_ADVISE = 1 << 7
RIGHT_FD_ALLOCATE = 1 << 8
RIGHT_PATH_CREATE_DIRECTORY = 1 << 9
RIGHT_PATH_CREATE_FILE = 1 << 10
RIGHT_PATH_LINK_SOURCE = 1 << 11
RIGHT_PATH_LINK_TARGET = 1 << 12
RIGHT_PATH_OPEN = 1 << 13
RIGHT_FD_READDIR = 1 << 14
RIGHT_PATH_READLINK = 1 << 15
RIGHT_PATH_RENAME_SOURCE = 1 << 16
RIGHT_PATH_RENAME_TARGET = 1 << 17
RIGHT_PATH_FILESTAT_GET = 1 << 18
RIGHT_PATH_FILESTAT_SET_SIZE = 1 << 19
RIGHT_PATH_FILESTAT_SET_TIMES = 1 << 20
RIGHT_FD_FILESTAT_GET = 1 << 21
RIGHT_FD_FILESTAT_SET_SIZE = 1 << 22
RIGHT_FD_FILESTAT_SET_TIMES = 1 << 23
RIGHT_PATH_SYMLINK = 1 << 24
RIGHT_PATH_REMOVE_DIRECTORY = 1 << 25
RIGHT_PATH_UNLINK_FILE = 1 << 26
RIGHT_POLL_FD_READWRITE = 1 << 27
RIGHT_SOCK_SHUTDOWN = 1 << 28
RIGHT_SOCK_ACCEPT = 1 << 29
RIGHTS_ALL = (1 << 30) - 1

RIGHTS_FILE_READ = (
    RIGHT_FD_READ
    | RIGHT_FD_SEEK
    | RIGHT_FD_TELL
    | RIGHT_FD_ADVISE
    | RIGHT_FD_FILESTAT_GET
    | RIGHT_POLL_FD_READWRITE
)
RIGHTS_FILE_WRITE = (
    RIGHT_FD_DATASYNC
    | RIGHT_FD_SYNC
    | RIGHT_FD_WRITE
    | RIGHT_FD_ALLOCATE
    | RIGHT_FD_FILESTAT_SET_SIZE
    | RIGHT_FD_FILESTAT_SET_TIMES
)
RIGHTS_FILE = RIGHTS_FILE_READ | RIGHTS_FILE_WRITE | RIGHT_FD_FDSTAT_SET_FLAGS
RIGHTS_DIR_READ = (
    RIGHT_PATH_OPEN
    | RIGHT_FD_READDIR
    | RIGHT_PATH_READLINK
    | RIGHT_PATH_FILESTAT_GET
    | RIGHT_FD_FILESTAT_GET
    | RIGHT_PATH_LINK_SOURCE
    | RIGHT_PATH_RENAME_SOURCE
)
RIGHTS_DIR_WRITE = (
    RIGHT_PATH_CREATE_DIRECTORY
    | RIGHT_PATH_CREATE_FILE
    | RIGHT_PATH_LINK_TARGET
    | RIGHT_PATH_RENAME_TARGET
    | RIGHT_PATH_FILESTAT_SET_TIMES
    | RIGHT_FD_FILESTAT_SET_TIMES
    | RIGHT_PATH_SYMLINK
    | RIGHT_PATH_REMOVE_DIRECTORY
    | RIGHT_PATH_UNLINK_FILE
)
# The exact sets wasmtime reports for a directory (guests echo them back into path_open,
# where any fd write-ish right such as FD_DATASYNC means "open for writing" -> EISDIR).
RIGHTS_DIR = RIGHTS_DIR_READ | RIGHTS_DIR_WRITE
RIGHTS_STDIO = RIGHT_FD_READ | RIGHT_FD_WRITE | RIGHT_FD_FILESTAT_GET | RIGHT_POLL_FD_READWRITE
RIGHTS_SOCKET = (
    RIGHT_FD_READ
    | RIGHT_FD_WRITE
    | RIGHT_FD_FDSTAT_SET_FLAGS
    | RIGHT_FD_FILESTAT_GET
    | RIGHT_POLL_FD_READWRITE
    | RIGHT_SOCK_SHUTDOWN
    | RIGHT_SOCK_ACCEPT
)

# fdflags (u16)
FDFLAG_APPEND = 1
FDFLAG_DSYNC = 2
FDFLAG_NONBLOCK = 4
FDFLAG_RSYNC = 8
FDFLAG_SYNC = 16
FDFLAGS_ALL = 31

# oflags (u16)
OFLAG_CREAT = 1
OFLAG_DIRECTORY = 2
OFLAG_EXCL = 4
OFLAG_TRUNC = 8

LOOKUP_SYMLINK_FOLLOW = 1

# fstflags (u16)
FST_ATIM = 1
FST_ATIM_NOW = 2
FST_MTIM = 4
FST_MTIM_NOW = 8

WHENCE_SET = 0
WHENCE_CUR = 1
WHENCE_END = 2

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
CLOCK_PROCESS_CPUTIME = 2
CLOCK_THREAD_CPUTIME = 3

EVENTTYPE_CLOCK = 0
EVENTTYPE_FD_READ = 1
EVENTTYPE_FD_WRITE = 2
EVENT_FD_READWRITE_HANGUP = 1
SUBCLOCK_ABSTIME = 1

RIFLAG_RECV_PEEK = 1
RIFLAG_RECV_WAITALL = 2
ROFLAG_RECV_DATA_TRUNCATED = 1
SDFLAG_RD = 1
SDFLAG_WR = 2

PREOPENTYPE_DIR = 0
ADVICE_MAX = 5  # normal, sequential, random, willneed, dontneed, noreuse

# struct layouts -----------------------------------------------------------------------------
IOVEC = struct.Struct("<II")  # buf, buf_len
U8 = struct.Struct("<B")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
# filetype u8, fs_flags u16, rights_base u64, rights_inheriting u64
FDSTAT = struct.Struct("<BxHxxxxQQ")
# dev, ino, filetype(u8), nlink, size, atim, mtim, ctim
FILESTAT = struct.Struct("<QQBxxxxxxxQQQQQ")
# tag u8, pr_name_len u32
PRESTAT = struct.Struct("<BxxxI")
# d_next u64, d_ino u64, d_namlen u32, d_type u8
DIRENT = struct.Struct("<QQIBxxx")
# userdata u64, error u16, type u8, fd_readwrite{nbytes u64, flags u16}
EVENT = struct.Struct("<QHBxxxxxQHxxxxxx")
# userdata u64, tag u8; then the union at offset 16
SUBSCRIPTION_HEAD = struct.Struct("<QB")
SUBSCRIPTION_SIZE = 48
SUBSCRIPTION_CLOCK = struct.Struct("<IxxxxQQH")  # id, timeout, precision, flags (at +16)
SUBSCRIPTION_FD = struct.Struct("<I")  # file_descriptor (at +16)

assert FDSTAT.size == 24
assert FILESTAT.size == 64
assert PRESTAT.size == 8
assert DIRENT.size == 24
assert EVENT.size == 32
assert 16 + SUBSCRIPTION_CLOCK.size == 42 <= SUBSCRIPTION_SIZE
