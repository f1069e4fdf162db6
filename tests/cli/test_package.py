"""``enarx user|repo|package`` against a real ``enarx registry serve`` (TLS, 127.0.0.1).

What a user sees: register, publish (signed or not), info, fetch with every digest and the
signature checked; refusals are typed errors with hints; a fetch that fails for any reason
(tampered or truncated blob in the registry's storage, wrong signer, full disk) leaves no
output directory and no partial file behind."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cliutil import ENARX
from tests.registry.server import Pkg, RegistryServer


class Cli:
    """Runs the real ``enarx`` with the registry's CA and (optionally) a token."""

    def __init__(self, server: RegistryServer, home: Path) -> None:
        self.server = server
        self.host = server.url.removeprefix("https://")
        assert server.ca is not None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
        self.env.update(HOME=str(home), ENARX_CA_BUNDLE=str(server.ca))

    def __call__(self, *args: str | Path, token: str | None = None,
                 env: dict[str, str] | None = None, fsize: int | None = None,
                 ) -> subprocess.CompletedProcess[str]:
        e = dict(self.env)
        if token is not None:
            e["ENARX_REGISTRY_TOKEN"] = token
        e.update(env or {})

        def limit() -> None:  # runs in the child only
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        return subprocess.run([str(ENARX), *map(str, args)], capture_output=True, text=True,
                              env=e, timeout=120, stdin=subprocess.DEVNULL, check=False,
                              preexec_fn=limit if fsize is not None else None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    s = RegistryServer(tmp_path_factory.mktemp("registry") / "state", tls=True)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cli(server: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(server, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def alice(server: RegistryServer, cli: Cli) -> str:
    token = server.token("alice")
    r = cli("user", "register", f"{cli.host}/alice", token=token)
    assert r.returncode == 0, r.stderr
    assert "registered user alice" in r.stdout
    for repo, extra in (("app", []), ("secret", ["--private"])):
        r = cli("repo", "register", f"{cli.host}/alice/{repo}", *extra, token=token)
        assert r.returncode == 0, r.stderr
    return token


def make_pkg(root: Path, marker: str = "MARKER") -> Path:
    (root / "data" / "sub").mkdir(parents=True)
    (root / "main.wasm").write_bytes(b"\0asm\1\0\0\0" + marker.encode() * 1000)
    (root / "Enarx.toml").write_text('args = ["x"]\n')
    (root / "data" / "sub" / "blob.bin").write_bytes(os.urandom(300_000))
    (root / "data" / "empty").write_bytes(b"")
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def independent_identity(root: Path) -> str:
    """The tree identity from the registry tests' own drawbridge tree builder."""
    types = {"main.wasm": "application/wasm", "Enarx.toml": "application/toml"}
    pkg = Pkg({p: (b, types.get(p, "text/plain" if p.endswith(".txt") else
                              "application/octet-stream"))
               for p, b in files_of(root).items()})
    return pkg.identity


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_register_publish_info_fetch(cli: Cli, alice: str, tmp_path: Path) -> None:
    pkg = make_pkg(tmp_path / "pkg")
    spec = f"{cli.host}/alice/app:1.0.0"
    r = cli("package", "publish", spec, pkg, token=alice)
    assert r.returncode == 0, r.stderr
    identity = independent_identity(pkg)
    assert f"identity {identity}" in r.stdout
    assert "uploaded" in r.stderr and "MB" in r.stderr  # the non-TTY one-line progress

    # anonymous read of a public repository
    r = cli("package", "info", spec, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["identity"] == identity and info["signed"] is False
    assert info["tags"] == ["1.0.0"]
    assert info["files"]["main.wasm"] == {"length": (pkg / "main.wasm").stat().st_size,
                                      "type": "application/wasm"}
    assert set(info["files"]) == set(files_of(pkg))

    out = tmp_path / "out"
    r = cli("package", "fetch", spec, "--out", out)
    assert r.returncode == 0, r.stderr
    assert files_of(out) == files_of(pkg)
    assert identity in r.stdout

    r = cli("repo", "info", f"{cli.host}/alice/app", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"public": True, "tags": ["1.0.0"]}


def test_republish_is_idempotent_but_tags_are_immutable(cli: Cli, alice: str,
                                                        tmp_path: Path) -> None:
    pkg = make_pkg(tmp_path / "pkg")
    spec = f"{cli.host}/alice/app:1.1.0"
    assert cli("package", "publish", spec, pkg, token=alice).returncode == 0
    r = cli("package", "publish", spec, pkg, token=alice)  # same bytes: fine
    assert r.returncode == 0, r.stderr
    (pkg / "Enarx.toml").write_text('args = ["y"]\n')
    r = cli("package", "publish", spec, pkg, token=alice)
    assert r.returncode == 2
    assert "already exists with other content" in r.stderr
    assert "hint: tags are immutable" in r.stderr


def test_signed_package(cli: Cli, alice: str, tmp_path: Path) -> None:
    pkg = make_pkg(tmp_path / "pkg")
    for k in ("k", "other"):
        assert cli("key", "create", "--out", tmp_path / f"{k}.pem").returncode == 0
    spec = f"{cli.host}/alice/app:2.0.0"
    r = cli("package", "publish", spec, pkg, "--sign", tmp_path / "k.pem", token=alice)
    assert r.returncode == 0, r.stderr
    assert "signed" in r.stdout
    assert json.loads(cli("package", "info", spec, "--json").stdout)["signed"] is True

    r = cli("package", "fetch", spec, "--out", tmp_path / "ok", "--signer",
            tmp_path / "k.pub.pem")
    assert r.returncode == 0, r.stderr
    assert "signed by sha256:" in r.stdout
    assert files_of(tmp_path / "ok") == files_of(pkg)

    r = cli("package", "fetch", spec, "--out", tmp_path / "bad", "--signer",
            tmp_path / "other.pub.pem")
    assert r.returncode == 4
    assert "package.signature" in r.stderr
    assert not (tmp_path / "bad").exists() and leftovers(tmp_path) == []

    # an unsigned tag with a signer required is refused, nothing written
    r = cli("package", "fetch", f"{cli.host}/alice/app:1.0.0", "--out", tmp_path / "uns",
            "--signer", tmp_path / "k.pub.pem")
    assert r.returncode == 4
    assert "is not signed, and a signer is required" in r.stderr
    assert not (tmp_path / "uns").exists()


def _blob(server: RegistryServer, data: bytes) -> Path:
    h = hashlib.sha256(data).hexdigest()
    return server.state / "blobs" / "sha256" / h[:2] / h


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_storage_is_detected(cli: Cli, alice: str, server: RegistryServer,
                                      tmp_path: Path, damage: str) -> None:
    pkg = make_pkg(tmp_path / "pkg", marker=f"tamper-{damage}")
    spec = f"{cli.host}/alice/app:3.0.0-{damage}"
    assert cli("package", "publish", spec, pkg, token=alice).returncode == 0
    blob = _blob(server, (pkg / "main.wasm").read_bytes())
    assert blob.exists()
    data = bytearray(blob.read_bytes())
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    if damage == "flip":
        data[100] ^= 1
        blob.write_bytes(bytes(data))
    else:
        blob.write_bytes(bytes(data[:4000]))
    r = cli("package", "fetch", spec, "--out", tmp_path / "out")
    assert r.returncode in (1, 4), r.stderr
    assert "main.wasm" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_disk_full_leaves_nothing(cli: Cli, alice: str, tmp_path: Path) -> None:
    pkg = make_pkg(tmp_path / "pkg")
    spec = f"{cli.host}/alice/app:4.0.0"
    assert cli("package", "publish", spec, pkg, token=alice).returncode == 0
    out = tmp_path / "dest" / "out"
    out.parent.mkdir()
    # Python ignores SIGXFSZ, so writes past RLIMIT_FSIZE fail with EFBIG as on a full disk
    r = cli("package", "fetch", spec, "--out", out, fsize=100_000)
    assert r.returncode == 2, r.stderr
    assert "cannot write the package" in r.stderr and "hint:" in r.stderr
    assert list(out.parent.iterdir()) == []


def test_refusals(cli: Cli, alice: str, server: RegistryServer, tmp_path: Path) -> None:
    pkg = make_pkg(tmp_path / "pkg")
    # no token
    r = cli("package", "publish", f"{cli.host}/alice/app:5.0.0", pkg)
    assert r.returncode == 2 and "401" in r.stderr and "ENARX_REGISTRY_TOKEN" in r.stderr
    # another user's token
    bob = server.token("bob")
    r = cli("package", "publish", f"{cli.host}/alice/app:5.0.0", pkg, token=bob)
    assert r.returncode == 2 and "403" in r.stderr
    # a private repository is not readable anonymously, but by its owner
    spec = f"{cli.host}/alice/secret:1.0.0"
    assert cli("package", "publish", spec, pkg, token=alice).returncode == 0
    r = cli("package", "info", spec)
    assert r.returncode == 2 and "private" in r.stderr
    r = cli("package", "fetch", spec, "--out", tmp_path / "o", token=alice)
    assert r.returncode == 0, r.stderr
    # unknown tag, --out that exists, registry down, plain http off loopback, bad SPEC
    r = cli("package", "info", f"{cli.host}/alice/app:9.9.9")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = cli("package", "fetch", f"{cli.host}/alice/secret:1.0.0", "--out", tmp_path / "o",
            token=alice)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = cli("package", "info", "127.0.0.1:1/alice/app:1.0.0")
    assert r.returncode == 1 and "cannot reach the registry https://127.0.0.1:1" in r.stderr
    r = cli("package", "info", "http://192.0.2.1/alice/app:1.0.0")
    assert r.returncode == 2 and "plain HTTP" in r.stderr and "--allow-insecure" in r.stderr
    r = cli("package", "info", "alice/app:1.0.0")
    assert r.returncode == 2 and "ENARX_REGISTRY" in r.stderr
    r = cli("repo", "register", f"{cli.host}/alice/x", "--allow-workload", "sha384:00",
            token=alice)
    assert r.returncode == 2 and "only applies to --private" in r.stderr
    assert "Traceback" not in r.stderr


def test_default_registry_and_credential_helper(cli: Cli, alice: str, tmp_path: Path) -> None:
    helper = tmp_path / "helper"
    helper.write_text(f"#!/bin/sh\n[ \"$1\" = show ] && [ \"$2\" = \"{cli.host}\" ] && "
                      f"echo {alice}\n")
    helper.chmod(0o700)
    pkg = make_pkg(tmp_path / "pkg")
    env = {"ENARX_REGISTRY": cli.host, "ENARX_CREDENTIAL_HELPER": str(helper)}
    r = cli("package", "publish", "alice/app:6.0.0", pkg, env=env)
    assert r.returncode == 0, r.stderr
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho leaked-secret >&2\nexit 3\n")
    failing.chmod(0o700)
    r = cli("package", "publish", "alice/app:6.0.1", pkg,
            env={**env, "ENARX_CREDENTIAL_HELPER": str(failing)})
    assert r.returncode == 2 and "exited with 3" in r.stderr
    assert "leaked-secret" not in r.stderr


def test_file_specs(cli: Cli, tmp_path: Path) -> None:
    pkg = make_pkg(tmp_path / "pkg")
    r = cli("package", "publish", f"file://{tmp_path / 'copy'}", pkg)
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "copy") == files_of(pkg)
    r = cli("package", "info", f"file://{tmp_path / 'copy'}", "--json")
    assert json.loads(r.stdout)["identity"] == independent_identity(pkg)
    r = cli("package", "fetch", f"file://{pkg / 'main.wasm'}", "--out", tmp_path / "one")
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "one") == {"main.wasm": (pkg / "main.wasm").read_bytes()}


def test_oci_publish_info_fetch_signed(cli: Cli, tmp_path: Path) -> None:
    """The same commands against the real distribution registry (plain http on loopback)."""
    from tests.package.ociregistry import DockerRegistry

    reg = DockerRegistry(tmp_path / "oci")
    try:
        pkg = make_pkg(tmp_path / "pkg", marker="OCI-MARKER")
        assert cli("key", "create", "--out", tmp_path / "k.pem").returncode == 0
        spec = f"oci://{reg.host}/alice/app:1.0.0"
        r = cli("package", "publish", spec, pkg, "--sign", tmp_path / "k.pem")
        assert r.returncode == 0, r.stderr
        r = cli("package", "info", spec, "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["identity"] == independent_identity(pkg) and info["kind"] == "oci"
        r = cli("package", "fetch", spec, "--out", tmp_path / "out", "--signer",
                tmp_path / "k.pub.pem")
        assert r.returncode == 0, r.stderr
        assert files_of(tmp_path / "out") == files_of(pkg)
        assert cli("key", "create", "--out", tmp_path / "o.pem").returncode == 0
        r = cli("package", "fetch", spec, "--out", tmp_path / "bad", "--signer",
                tmp_path / "o.pub.pem")
        assert r.returncode == 4 and "package.signature" in r.stderr
        assert not (tmp_path / "bad").exists()
    finally:
        reg.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["user", "register", "127.0.0.1:1/al/ice/x"], "is not [HOST/]USER"),
    (["user", "register", "127.0.0.1:1/al_ice"], "is not [A-Za-z0-9]+"),
    (["repo", "register", "127.0.0.1:1/alice"], "write [HOST/]USER/REPO"),
    (["repo", "register", "127.0.0.1:1/alice/re po"], "whitespace"),
    (["repo", "info", "alice/app"], "ENARX_REGISTRY"),
    (["repo", "info", "ftp://h/alice/app"], "unsupported scheme"),
    (["user", "info", "http://192.0.2.1/alice"], "plain HTTP"),
])
def test_user_and_repo_targets(cli: Cli, args: list[str], message: str) -> None:
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert "0.0.0" not in r.stderr  # the synthetic tag used for parsing never shows


def test_user_info_with_token(cli: Cli, alice: str) -> None:
    r = cli("user", "info", f"{cli.host}/alice", "--json", token=alice)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"subject": "alice"}


def test_signed_file_publish_refused_before_the_key_leaves(cli: Cli, tmp_path: Path) -> None:
    """file:// cannot carry a signature: refused before the content key goes anywhere (the
    steward here is unreachable: reaching for it first would be exit 1)."""
    pkg = make_pkg(tmp_path / "pkg")
    assert cli("key", "create", "--out", tmp_path / "k.pem").returncode == 0
    (tmp_path / "tok").write_text("t\n")
    r = cli("package", "publish", f"file://{tmp_path / 'copy'}", pkg, "--sign",
            tmp_path / "k.pem", "--encrypt", "--steward", "https://127.0.0.1:1",
            "--steward-ca", tmp_path / "k.pub.pem", "--admin-token-file", tmp_path / "tok")
    assert r.returncode == 2, r.stderr
    assert "cannot carry a signature" in r.stderr
    assert not (tmp_path / "copy").exists()


def test_progress_bar_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    """On a TTY stderr the transfer shows a live bar (redrawn with \\r), sized in MB."""
    import pty

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "main.wasm").write_bytes(b"\0asm\1\0\0\0" + os.urandom(3_000_000))
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    try:
        p = subprocess.run([str(ENARX), "package", "publish", f"file://{tmp_path / 'c'}",
                            str(pkg)], stdout=subprocess.PIPE, stderr=slave, env=cli.env,
                           stdin=subprocess.DEVNULL, timeout=120, check=False)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert p.returncode == 0
    text = out.decode(errors="replace")
    assert "uploaded …" in text and "3.0/3.0 MB" in text and "\r" in text
