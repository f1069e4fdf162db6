"""`enarx deploy` (enarx.keep.deploy) and Enarx.toml [[secrets]] with a real steward on
127.0.0.1: the Keep attests for the package identity, receives the content key and the
secrets as JWE, decrypts in memory and runs; every refusal runs nothing."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from enarx.package import crypt
from enarx.package.tree import Tree
from tests.keep.deploykit import (
    DATA_MARKER,
    FILE_SECRET_MARKER,
    SECRET_MARKER,
    SECRETS_TOML,
    Env,
    Steward,
    make_env,
    probe_package,
    sim_policy,
    steward,
)

EROFS = 69


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Env:
    return make_env(tmp_path_factory.mktemp("deploy"), module_cache,
                    tmp_path_factory.getbasetemp() / "sim-state")


@pytest.fixture(scope="module")
def packages(env: Env) -> dict[str, object]:
    """A plaintext package with [[secrets]], and its encrypted form."""
    plain = probe_package(env.root / "plain", secrets=SECRETS_TOML)
    enc = crypt.encrypt_package(plain, env.root / "enc")
    return {"plain": plain, "enc": env.root / "enc", "encrypted": enc,
            "plain_id": Tree.build(plain).identity}


@pytest.fixture(scope="module")
def granted(env: Env, packages: dict[str, object]) -> Iterator[Steward]:
    """A steward granting the package's key and secrets to the package identity only."""
    enc = packages["encrypted"]
    assert isinstance(enc, crypt.EncryptedPackage)
    ident = enc.identity
    assert ident == packages["plain_id"]
    policy = sim_policy(env, {enc.resource: [ident], "app/secret/db": [ident],
                              "app/secret/api": [ident]})
    for s in steward(env, "granted", policy):
        s.put(enc.resource, enc.key)
        s.put("app/secret/db", SECRET_MARKER.encode())
        s.put("app/secret/api", FILE_SECRET_MARKER.encode())
        yield s


def _deploy(env: Env, s: Steward | None, spec: str, *extra: str
            ) -> tuple[int, dict[str, str], str]:
    args = ["deploy", "--backend", "sim", "--allow-insecure", *extra]
    if s is not None:
        args += ["--steward", s.url, "--steward-ca", str(s.ca)]
    r = env.run(*args, spec)
    out = {}
    for line in r.stdout.splitlines():
        kind, path, rest = [*line.split(" ", 2), "", ""][:3]
        out[f"{kind}:{path}"] = rest
    return r.returncode, out, r.stderr


def test_an_encrypted_package_runs_with_its_data_and_secrets(
    env: Env, packages: dict[str, object], granted: Steward,
) -> None:
    code, out, err = _deploy(env, granted, f"file://{packages['enc']}")
    assert code == 0, err
    assert out["cat:/data/info.txt"] == DATA_MARKER  # decrypted in memory, read-only
    assert out["env:DB_PASSWORD"] == SECRET_MARKER
    assert out["cat:/run/secrets/api"] == FILE_SECRET_MARKER
    assert out["ls:/run/secrets"] == "api"
    assert out["write:/data/new"] == f"errno {EROFS}"
    assert f"package {packages['plain_id']}" in err  # attested as the package identity
    assert re.search(r"fetched file://\S+: [0-9.]+ MB in", err)  # progress (one line: no TTY)
    for marker in (SECRET_MARKER, FILE_SECRET_MARKER):
        assert marker not in err  # never logged


def test_a_plaintext_package_gets_its_secrets_after_attesting(
    env: Env, packages: dict[str, object], granted: Steward,
) -> None:
    code, out, err = _deploy(env, granted, str(packages["plain"]))
    assert code == 0, err
    assert out["env:DB_PASSWORD"] == SECRET_MARKER
    assert out["cat:/data/info.txt"] == DATA_MARKER


def test_a_non_confidential_backend_is_refused_without_allow_insecure(
    env: Env, packages: dict[str, object], granted: Steward,
) -> None:
    r = env.run("deploy", "--backend", "sim", "--steward", granted.url, "--steward-ca",
                granted.ca, f"file://{packages['enc']}")
    assert r.returncode == 2
    assert "not confidential" in r.stderr and "--allow-insecure" in r.stderr
    assert r.stdout == ""


def test_an_encrypted_package_needs_a_steward(env: Env, packages: dict[str, object]) -> None:
    code, out, err = _deploy(env, None, f"file://{packages['enc']}")
    assert code == 2 and not out
    assert "only a steward releases its key" in err


def test_secrets_need_a_steward(env: Env, packages: dict[str, object]) -> None:
    code, out, err = _deploy(env, None, f"file://{packages['plain']}")
    assert code == 2 and not out
    assert "[[secrets]]" in err and "Traceback" not in err


def test_tampered_ciphertext_is_refused_before_running(
    env: Env, packages: dict[str, object], granted: Steward, tmp_path: Path,
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(str(packages["enc"]), bad)
    blob = bytearray((bad / "main.wasm").read_bytes())
    blob[100] ^= 1
    (bad / "main.wasm").write_bytes(bytes(blob))
    code, out, err = _deploy(env, granted, f"file://{bad}")
    assert code == 4 and not out, err
    assert "Traceback" not in err


def test_files_swapped_between_paths_are_refused(
    env: Env, packages: dict[str, object], granted: Steward, tmp_path: Path,
) -> None:
    bad = tmp_path / "swapped"
    shutil.copytree(str(packages["enc"]), bad)
    a, b = bad / "Enarx.toml", bad / "data" / "info.txt"
    ta, tb = a.read_bytes(), b.read_bytes()
    a.write_bytes(tb)
    b.write_bytes(ta)
    code, out, err = _deploy(env, granted, f"file://{bad}")
    assert code == 4 and not out, err


def test_a_rewritten_manifest_gets_no_key(
    env: Env, packages: dict[str, object], granted: Steward, tmp_path: Path,
) -> None:
    """The host points the manifest at another identity: the Keep attests as that one, and
    the steward grants that identity nothing."""
    bad = tmp_path / "manifest"
    shutil.copytree(str(packages["enc"]), bad)
    m = crypt.read_manifest((bad / crypt.MANIFEST_NAME).read_bytes())
    other = crypt.Manifest(identity="sha384:" + "ab" * 48, resource=m.resource)
    (bad / crypt.MANIFEST_NAME).write_bytes(other.to_bytes())
    code, out, err = _deploy(env, granted, f"file://{bad}")
    assert code == 4 and not out, err
    assert "did not release" in err


def test_a_workload_the_policy_does_not_name_gets_no_key(
    env: Env, packages: dict[str, object],
) -> None:
    enc = packages["encrypted"]
    assert isinstance(enc, crypt.EncryptedPackage)
    policy = sim_policy(env, {enc.resource: ["sha384:" + "cd" * 48]})
    for s in steward(env, "other", policy):
        s.put(enc.resource, enc.key)
        code, out, err = _deploy(env, s, f"file://{packages['enc']}")
        assert code == 4 and not out, err
        assert "not granted" in err


def test_a_signer_on_an_unsigned_package_is_refused(
    env: Env, packages: dict[str, object], granted: Steward, tmp_path: Path,
) -> None:
    r = env.run("key", "create", "--out", tmp_path / "k.pem")
    assert r.returncode == 0, r.stderr
    code, out, err = _deploy(env, granted, f"file://{packages['enc']}", "--signer",
                             str(tmp_path / "k.pub.pem"))
    assert code == 4 and not out, err
    assert "not signed" in err


def test_enarx_run_with_a_steward_honours_secrets(env: Env, tmp_path: Path) -> None:
    pkg = probe_package(tmp_path / "run", secrets=SECRETS_TOML,
                        args=["env:DB_PASSWORD", "cat:/run/secrets/api"])
    cfg, wasm = pkg / "Enarx.toml", pkg / "main.wasm"
    r = env.run("identity", "--wasmcfgfile", cfg, wasm)
    assert r.returncode == 0, r.stderr
    ident = r.stdout.strip()
    policy = sim_policy(env, {"app/secret/*": [ident]})
    for s in steward(env, "run-steward", policy):
        s.put("app/secret/db", SECRET_MARKER.encode())
        s.put("app/secret/api", FILE_SECRET_MARKER.encode())
        r = env.run("run", "--backend", "sim", "--steward", s.url, "--steward-ca", s.ca,
                    "--wasmcfgfile", cfg, wasm)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [f"env DB_PASSWORD {SECRET_MARKER}",
                                         f"cat /run/secrets/api {FILE_SECRET_MARKER}"]
        # without a steward: refused before anything runs
        r = env.run("run", "--backend", "sim", "--wasmcfgfile", cfg, wasm)
        assert r.returncode == 2 and r.stdout == ""
        assert "[[secrets]]" in r.stderr


# --- bad input: exit 2 with a hint, nothing runs, no traceback --------------------------------


def _bad_package(tmp_path: Path, toml: str) -> Path:
    pkg = probe_package(tmp_path / "pkg", args=["cat:/data/info.txt"])
    (pkg / "Enarx.toml").write_text(toml)
    return pkg


@pytest.mark.parametrize(("args", "fault"), [
    (["not a spec"], "SPEC"),
    (["file:///nonexistent/pkg"], "cannot read"),
    (["--backend", "bogus", "file:///x"], "unknown backend"),
    (["--steward", "http://127.0.0.1:1", "--steward-ca", "/dev/null", "file:///x"],
     "https://"),
    (["--steward", "https://127.0.0.1:1", "file:///x"], "--steward-ca"),
    (["--signer", "/nonexistent.pem", "file:///x"], "--signer"),
    (["--max-memory", "lots", "file:///x"], "--max-memory"),
])
def test_bad_flags_are_refused_clearly(env: Env, args: list[str], fault: str) -> None:
    r = env.run("deploy", "--backend", "sim", "--allow-insecure", *args)
    assert r.returncode == 2, r.stderr
    assert fault in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize(("toml", "fault"), [
    ('[[files]]\nkind = "dir"\nhost = "data"\nguest = "/data"\n', "read-only"),
    ('[[files]]\nkind = "dir"\nhost = "../../etc"\nreadonly = true\n', "not a directory of"),
    ('[[files]]\nkind = "dir"\nhost = "main.wasm"\nreadonly = true\n', "is a file"),
    ("args = [", "Enarx.toml"),
    ("bogus = 1\n", "bogus"),
])
def test_a_bad_package_config_is_refused_before_running(
    env: Env, tmp_path: Path, toml: str, fault: str,
) -> None:
    pkg = _bad_package(tmp_path, toml)
    r = env.run("deploy", "--backend", "sim", "--allow-insecure", f"file://{pkg}")
    assert r.returncode == 2, r.stderr
    assert fault in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


def test_a_package_without_main_wasm_is_refused(env: Env, tmp_path: Path) -> None:
    pkg = _bad_package(tmp_path, "")
    (pkg / "main.wasm").unlink()
    r = env.run("deploy", "--backend", "sim", "--allow-insecure", f"file://{pkg}")
    assert r.returncode == 2 and "main.wasm" in r.stderr and r.stdout == ""


def test_a_steward_that_is_down_is_a_clear_error_naming_it(
    env: Env, packages: dict[str, object], granted: Steward,
) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = env.run("deploy", "--backend", "sim", "--allow-insecure", "--steward",
                f"https://127.0.0.1:{port}", "--steward-ca", granted.ca,
                f"file://{packages['enc']}")
    assert r.returncode == 1 and r.stdout == ""
    assert f"127.0.0.1:{port}" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr


def test_deploy_from_a_tls_registry_trusting_its_ca_bundle(env: Env, tmp_path: Path) -> None:
    from tests.registry.server import RegistryServer

    reg = RegistryServer(tmp_path / "tls-registry", tls=True)
    try:
        assert reg.ca is not None and reg.url.startswith("https://")
        host = reg.url.removeprefix("https://")
        e = dict(env.env, ENARX_REGISTRY_TOKEN=reg.token("bob"))
        pkg = probe_package(tmp_path / "pkg", args=["cat:/data/info.txt"], data="over TLS")
        run = Env(env.root, e, env.ark).run
        for args in (("user", "register", "--ca-bundle", reg.ca, f"{host}/bob"),
                     ("repo", "register", "--ca-bundle", reg.ca, f"{host}/bob/app"),
                     ("package", "publish", "--ca-bundle", reg.ca, f"{host}/bob/app:1.0.0",
                      pkg)):
            r = run(*args)
            assert r.returncode == 0, r.stderr
        r = run("deploy", "--backend", "sim", "--allow-insecure", "--ca-bundle", reg.ca,
                f"{host}/bob/app:1.0.0")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "cat /data/info.txt over TLS\n"
        # without the CA the registry's certificate is not trusted: a clear error
        r = run("deploy", "--backend", "sim", "--allow-insecure", f"{host}/bob/app:1.0.0")
        assert r.returncode != 0 and r.stdout == "" and "not trusted" in r.stderr
    finally:
        reg.stop()


def test_an_encrypted_package_without_main_wasm_is_refused_after_decrypting(
    env: Env, tmp_path: Path,
) -> None:
    """Made by hand (publish refuses it): every chunk and the identity check out, but there
    is nothing to run."""
    from enarx.package.tree import identity_of_files

    files = {"Enarx.toml": b'args = []\n', "data/x.txt": b"no module here"}
    ident = identity_of_files(files)
    key = crypt.new_key()
    out = tmp_path / "enc"
    for path, data in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(crypt.encrypt_bytes(data, key, identity=ident, path=path))
    manifest = crypt.Manifest(identity=ident, resource=crypt.default_key_resource(ident))
    (out / crypt.MANIFEST_NAME).write_bytes(manifest.to_bytes())
    for s in steward(env, "no-main", sim_policy(env, {manifest.resource: [ident]})):
        s.put(manifest.resource, key)
        code, out_, err = _deploy(env, s, f"file://{out}")
        assert code == 2 and not out_, err
        assert "no main.wasm" in err
