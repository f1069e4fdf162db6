"""The whole flow, end to end, with real services on 127.0.0.1: a steward (`enarx steward
serve`), the embedded registry (`enarx registry serve`), the CNCF distribution registry
(`docker-registry`), `enarx package publish --encrypt --sign` to both, and `enarx deploy` on
the sim backend with --allow-insecure, through relays that record every byte crossing the
host's sockets.

A marker string sits in the wasm module (a custom section), in a data file and in each
secret; the Keep prints them, and a host-side scan proves none appears in the clear in the
registries' storage, on the host's disk (the test's tmp dirs, HOME, the module cache,
TMPDIR) or in the recorded socket traffic. Refusals: a Keep whose workload identity or
measurement the steward's policy does not allow gets no key and runs nothing; a required
signature that is absent or by another key is refused.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from enarx.package.crypt import default_key_resource
from enarx.package.tree import Tree
from tests.keep.deploykit import (
    DATA_MARKER,
    FILE_SECRET_MARKER,
    MODULE_MARKER,
    SECRET_MARKER,
    SECRETS_TOML,
    Env,
    Steward,
    make_env,
    probe_package,
    sim_policy,
    steward,
)
from tests.package.ociregistry import DockerRegistry
from tests.registry.server import RegistryServer

MARKERS = (MODULE_MARKER, DATA_MARKER, SECRET_MARKER, FILE_SECRET_MARKER)
PUBLIC_DATA = "public data: this package is published in the clear"


class Relay:
    """A TCP relay on 127.0.0.1 to ``target`` that records every byte in both directions."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.seen = bytearray()
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self._conns:
            c.close()
        self._t.join(5)


@dataclass
class World:
    env: Env
    publisher: Path  # the owner's plaintext packages: outside the host-side scan
    steward: Steward
    registry: RegistryServer
    oci: DockerRegistry
    relays: dict[str, Relay]
    pub_key: Path
    other_key: Path

    def deploy(self, spec: str, *extra: str, s: Steward | None = None,
               via_relay: bool = True) -> tuple[int, dict[str, str], str]:
        s = s or self.steward
        url = s.url
        if via_relay and s is self.steward:
            url = f"https://127.0.0.1:{self.relays['steward'].port}"
        r = self.env.run("deploy", "--backend", "sim", "--allow-insecure", "--steward", url,
                         "--steward-ca", s.ca, *extra, spec)
        out = {}
        for line in r.stdout.splitlines():
            kind, path, rest = [*line.split(" ", 2), "", ""][:3]
            out[f"{kind}:{path}"] = rest
        return r.returncode, out, r.stderr

    def spec(self, kind: str, repo: str = "app", tag: str = "1.0.0") -> str:
        if kind == "drawbridge":
            return f"http://127.0.0.1:{self.relays['registry'].port}/alice/{repo}:{tag}"
        return f"oci://127.0.0.1:{self.relays['oci'].port}/alice/{repo}:{tag}"


def _host(url: str) -> tuple[str, int]:
    host, _, port = url.rsplit("/", 1)[-1].rpartition(":")
    return host, int(port)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("deploy-e2e")
    env = make_env(root / "host", module_cache, tmp_path_factory.getbasetemp() / "sim-state")
    (root / "host" / "tmp").mkdir()
    env.env["TMPDIR"] = str(root / "host" / "tmp")  # any temporary file lands in the scan
    pub = root / "publisher"
    draw_pkg = probe_package(pub / "draw", secrets=SECRETS_TOML)
    oci_pkg = probe_package(pub / "oci", secrets=SECRETS_TOML)
    (oci_pkg / "data" / "oci.txt").write_text("another package: another identity and key")
    ids = [Tree.build(p).identity for p in (draw_pkg, oci_pkg)]
    grants = {default_key_resource(i): [i] for i in ids}
    grants["app/secret/*"] = ids
    stack: list[object] = []
    try:
        s = Steward(env, "steward", sim_policy(env, grants))
        stack.append(s)
        s.put("app/secret/db", SECRET_MARKER.encode())
        s.put("app/secret/api", FILE_SECRET_MARKER.encode())
        reg = RegistryServer(root / "host" / "registry")
        stack.append(reg)
        oci = DockerRegistry(root / "host" / "docker-registry")
        stack.append(oci)
        relays = {"steward": Relay(_host(s.url)), "registry": Relay(_host(reg.url)),
                  "oci": Relay(_host("x/" + oci.host))}
        stack += relays.values()
        for name in ("pub", "other"):
            r = env.run("key", "create", "--out", pub / f"{name}.pem")
            assert r.returncode == 0, r.stderr
        w = World(env, pub, s, reg, oci, relays, pub / "pub.pub.pem", pub / "other.pub.pem")
        env.env["ENARX_REGISTRY_TOKEN"] = reg.token("alice")
        for args in (("user", "register", f"{reg.url}/alice"),
                     ("repo", "register", f"{reg.url}/alice/app"),
                     ("repo", "register", f"{reg.url}/alice/plain")):
            r = env.run(*args)
            assert r.returncode == 0, r.stderr
        enc = ("--encrypt", "--steward", s.url, "--steward-ca", s.ca, "--admin-token-file",
               s.state / "admin-token", "--sign", pub / "pub.pem")
        for spec, pkg in ((f"{reg.url}/alice/app:1.0.0", draw_pkg),
                          (f"oci://{oci.host}/alice/app:1.0.0", oci_pkg)):
            r = env.run("package", "publish", *enc, spec, pkg)
            assert r.returncode == 0, r.stderr
        # an unsigned, unencrypted package (no secrets, so no steward grant needed)
        plain = probe_package(pub / "plain", args=["cat:/data/info.txt"],
                              module_marker="PUBLIC-MODULE", data=PUBLIC_DATA)
        r = env.run("package", "publish", f"{reg.url}/alice/plain:1.0.0", plain)
        assert r.returncode == 0, r.stderr
        yield w
    finally:
        for item in reversed(stack):
            item.stop() if hasattr(item, "stop") else item.close()  # type: ignore[attr-defined]


def _ran(out: dict[str, str]) -> None:
    assert out["cat:/data/info.txt"] == DATA_MARKER
    assert out["env:DB_PASSWORD"] == SECRET_MARKER
    assert out["cat:/run/secrets/api"] == FILE_SECRET_MARKER
    assert out["write:/data/new"] == "errno 69"  # EROFS: the package is read-only


@pytest.mark.parametrize("kind", ["drawbridge", "oci"])
def test_a_signed_encrypted_package_deploys_and_the_host_sees_ciphertext_only(
    world: World, kind: str,
) -> None:
    before = {r: len(x.seen) for r, x in world.relays.items()}
    code, out, err = world.deploy(world.spec(kind), "--signer", str(world.pub_key))
    assert code == 0, err
    _ran(out)
    assert "attested to" in err
    # the scan below inspects real traffic: the Keep reached the steward and the registry
    # only through the relays
    relay = "registry" if kind == "drawbridge" else "oci"
    for name in ("steward", relay):
        assert len(world.relays[name].seen) > before[name]
    # the compiled module was cached, sealed (the scan covers the cache directory)
    assert any((Path(world.env.env["ENARX_CACHE_DIR"]) / "sealed").iterdir())
    _scan(world)


def _scan(world: World) -> None:
    """No marker in the clear on the host: registries' storage, tmp dirs, HOME, the module
    cache, TMPDIR, or the bytes that crossed the relays. (The steward is the trusted party
    that holds the secrets: its state is not host storage in this sense.)"""
    places = [world.env.root, Path(world.env.env["ENARX_CACHE_DIR"])]
    steward_dirs = [p for p in world.env.root.iterdir() if (p / "steward.toml").exists()]
    found = []
    for place in places:
        for p in place.rglob("*"):
            if not p.is_file() or any(d in p.parents for d in steward_dirs):
                continue
            data = p.read_bytes()
            found += [(m, str(p)) for m in MARKERS if m.encode() in data]
    for name, relay in world.relays.items():
        found += [(m, f"socket via {name}") for m in MARKERS if m.encode() in relay.seen]
    assert not found
    # the scan can see: the publisher's plaintext (outside the host) holds every file marker
    src = b"".join(p.read_bytes() for p in (world.publisher / "draw").rglob("*")
                   if p.is_file())
    assert MODULE_MARKER.encode() in src and DATA_MARKER.encode() in src
    assert world.registry.state.exists() and any(world.oci.files())


def test_a_workload_the_policy_does_not_allow_gets_nothing(world: World) -> None:
    policy = sim_policy(world.env, {}) + '\n[workload]\nallow = ["sha384:' + "ab" * 48 + '"]\n'
    for s in steward(world.env, "deny-workload", policy):
        code, out, err = world.deploy(world.spec("drawbridge"), s=s)
        assert code == 4 and not out, err
        assert "workload.allow" in err


def test_a_measurement_the_policy_does_not_allow_gets_nothing(world: World) -> None:
    policy = sim_policy(world.env, {}) + '\n[snp]\nhash = ["' + "00" * 48 + '"]\n'
    for s in steward(world.env, "deny-measurement", policy):
        code, out, err = world.deploy(world.spec("oci"), s=s)
        assert code == 4 and not out, err
        assert "snp.hash" in err


def test_a_key_the_policy_does_not_grant_is_not_released(world: World) -> None:
    for s in steward(world.env, "no-grant", sim_policy(world.env, {})):
        code, out, err = world.deploy(world.spec("drawbridge"), s=s)
        assert code == 4 and not out, err
        assert "did not release" in err


@pytest.mark.parametrize("kind", ["drawbridge", "oci"])
def test_a_signature_by_another_key_is_refused(world: World, kind: str) -> None:
    code, out, err = world.deploy(world.spec(kind), "--signer", str(world.other_key))
    assert code == 4 and not out, err


def test_a_required_signature_that_is_absent_is_refused(world: World) -> None:
    code, out, err = world.deploy(world.spec("drawbridge", "plain"), "--signer",
                                  str(world.pub_key))
    assert code == 4 and not out, err
    assert "not signed" in err
    # without --signer the same unsigned package runs
    code, out, err = world.deploy(world.spec("drawbridge", "plain"))
    assert code == 0 and out["cat:/data/info.txt"] == PUBLIC_DATA, err


@pytest.mark.parametrize("spec", ["http://192.0.2.1/alice/app:1.0.0",
                                  "oci+http://192.0.2.1/alice/app:1.0.0"])
def test_plain_http_to_a_non_loopback_registry_needs_allow_insecure(
    world: World, spec: str,
) -> None:
    r = world.env.run("deploy", "--backend", "sim", spec)
    assert r.returncode == 2 and r.stdout == ""
    assert "plain HTTP" in r.stderr and "not a loopback address" in r.stderr


def test_the_registry_down_is_a_clear_error_naming_it(world: World) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    code, out, err = world.deploy(f"http://127.0.0.1:{port}/alice/app:1.0.0")
    assert code != 0 and not out
    assert f"127.0.0.1:{port}" in err and "Traceback" not in err


