"""`kind = "connect"`: the Keep connects before the workload starts (tcp and tls)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.net.netkeep import IO_TIMEOUT, StartKeep, guest, need_tool, toml
from tests.net.netpki import Pki


def connect(name: str, host: str, port: int, prot: str, extra: str = "") -> str:
    return f'kind = "connect"\nname = "{name}"\nprot = "{prot}"\nhost = "{host}"\nport = {port}\n{extra}'


@contextmanager
def server(
    handler: Callable[[socket.socket], None],
    family: socket.AddressFamily = socket.AF_INET,
    ctx: ssl.SSLContext | None = None,
) -> Iterator[tuple[int, list[BaseException]]]:
    """A one-connection server on loopback; handler errors are collected for the test."""
    ls = socket.socket(family)
    ls.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    ls.listen()
    ls.settimeout(120)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = ls.accept()
            conn.settimeout(IO_TIMEOUT)
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            with conn:
                handler(conn)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield ls.getsockname()[1], errors
    finally:
        t.join(IO_TIMEOUT)
        ls.close()


def drive_scenario(s: socket.socket) -> None:
    """Our side of net_scenario's stream scenario; the guest echoes."""
    w, r = s.makefile("wb", buffering=0), s.makefile("rb")
    for line in (b"one\n", b"two\n"):
        w.write(line)
        assert r.readline() == line
    assert r.readline() == b"go\n"
    w.write(b"three\n")
    assert r.readline() == b"three\n"


@pytest.mark.parametrize(
    ("host", "family"),
    [("localhost", socket.AF_INET), ("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)],
)
def test_upstream_connect_tcp_scenario(
    start_keep: StartKeep, host: str, family: socket.AddressFamily
) -> None:
    """Also: a hostname is resolved by the Keep (localhost -> 127.0.0.1)."""
    with server(drive_scenario, family) as (port, errors):
        keep = start_keep(
            guest("net_scenario.c"), toml(connect("stream", host, port, "tcp")), ["connect"]
        )
        rc, out, err = keep.finish()
    assert not errors, errors
    assert rc == 0, out + err
    assert out.splitlines() == [
        "FD_COUNT=4 FD_NAMES=stdin:stdout:stderr:stream",
        "connect stream ok",
        "done",
    ]
    assert err.count("warning: files[3] (stream): plaintext tcp") == 1


def test_connect_tls_with_trust_file(start_keep: StartKeep, pki: Pki) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    with server(drive_scenario, ctx=ctx) as (port, errors):
        keep = start_keep(
            guest("net_scenario.c"),
            toml(connect("stream", "localhost", port, "tls", f'trust = "{pki.ca}"')),
            ["connect"],
        )
        rc, out, err = keep.finish()
    assert not errors, errors
    assert rc == 0, out + err
    assert "connect stream ok" in out
    assert "plaintext" not in err


def test_connect_tls_presents_the_keep_certificate(
    start_keep: StartKeep, pki: Pki, tmp_path: Path
) -> None:
    """openssl s_server asks for a client certificate and reverses our line."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = subprocess.Popen(
        [need_tool("openssl"), "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-rev",
         "-cert", str(pki.server_cert), "-key", str(pki.server_key), "-verify", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert srv.stdout is not None
        for line in srv.stdout:  # wait until it listens
            if b"ACCEPT" in line:
                break
        keep = start_keep(
            guest("net_scenario.c"),
            toml(connect("api", "localhost", port, "tls", f'trust = "{pki.ca}"')),
            ["client"],
        )
        rc, out, err = keep.finish()
        s_out = srv.communicate(timeout=IO_TIMEOUT)[0].decode()
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    assert rc == 0, out + err
    assert "reply: peek olleh" in out
    # s_server prints the subject of the client certificate it was shown.
    assert "CN = enarx keep" in s_out, s_out


@pytest.mark.parametrize("case", ["system-trust", "wrong-name"])
def test_connect_tls_untrusted_server_is_refused(
    enarx, tmp_path: Path, pki: Pki, case: str
) -> None:  # type: ignore[no-untyped-def]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if case == "wrong-name":
        ctx.load_cert_chain(pki.other_cert, pki.other_key)
        extra = f'trust = "{pki.ca}"'
    else:
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        extra = ""  # trust = "system": a scratch CA is not a system root

    with server(lambda s: None, ctx=ctx) as (port, errors):
        cfg = tmp_path / "Enarx.toml"
        cfg.write_text(toml(connect("api", "localhost", port, "tls", extra)))
        r = enarx("run", "--backend", "nil", "--wasmcfgfile", cfg, guest("net_scenario.c"))
    # The server side saw the Keep abort the handshake.
    assert len(errors) == 1 and isinstance(errors[0], ssl.SSLError), errors
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"files[3] (api): the TLS server localhost:{port} is not trusted" in err
    assert "Traceback" not in err


def test_connect_refused_names_the_entry(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(toml(connect("db", "127.0.0.1", port, "tcp")))
    r = enarx("run", "--backend", "nil", "--wasmcfgfile", cfg, guest("net_scenario.c"))
    err = r.stderr.decode()
    assert r.returncode == 2
    assert f"error: files[3] (db): cannot connect to 127.0.0.1:{port}" in err
    assert "refused" in err.lower() and "Traceback" not in err


def test_unresolvable_host_names_the_entry(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(toml(connect("db", "no-such-host.invalid", 5432, "tcp")))
    r = enarx("run", "--backend", "nil", "--wasmcfgfile", cfg, guest("net_scenario.c"))
    err = r.stderr.decode()
    assert r.returncode == 2
    assert "files[3] (db): cannot resolve 'no-such-host.invalid'" in err


@pytest.mark.parametrize("bad", ["a..b", "x" * 64 + ".example"])
def test_socket_layer_refuses_bad_dns_labels_even_without_config_validation(bad: str) -> None:
    # A caller building entries directly (no Enarx.toml validation) still gets a typed error,
    # not the idna codec's UnicodeError.
    from enarx.config import ConnectFile, ListenFile
    from enarx.errors import ResourceError
    from enarx.keep.sockets import open_entry

    entries = [ListenFile.model_construct(kind="listen", name="l", prot="tcp", addr=bad, port=0),
               ConnectFile.model_construct(kind="connect", host=bad, port=1, prot="tcp",
                                           name="c", trust="system")]
    for entry in entries:
        with pytest.raises(ResourceError) as info:
            open_entry(entry, "files[3] (x)")
        assert info.value.message.startswith("files[3] (x): invalid ")
        assert info.value.hint
