"""``enarx identity``: the workload identity a Keep attests, from the real CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from enarx import config as cfg
from enarx.flags import parse_dir_spec
from enarx.workload import identity_of
from tests.cliutil import RunEnarx

WAT = b'(module (func (export "_start")) (memory (export "memory") 1))'


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "app.wat"
    path.write_bytes(WAT)
    return path


def out(proc: object) -> str:
    return proc.stdout.decode().strip()  # type: ignore[attr-defined]


def test_prints_the_identity_of_module_and_default_config(enarx: RunEnarx,
                                                         module: Path) -> None:
    proc = enarx("identity", module)
    assert proc.returncode == 0, proc.stderr
    assert out(proc) == identity_of(WAT, None)
    assert out(proc).startswith("sha384:") and len(out(proc)) == 7 + 96


def test_config_file_and_flags_in_either_order(enarx: RunEnarx, module: Path,
                                               tmp_path: Path) -> None:
    toml = tmp_path / "Enarx.toml"
    toml.write_text('args = ["--serve"]\n[env]\nMODE = "prod"\n')
    want = identity_of(WAT, cfg.loads(toml.read_text()), extra_args=["x"],
                       extra_env=[("K", "v")], extra_dirs=[parse_dir_spec("data::/d:ro")])
    first = enarx("identity", "--wasmcfgfile", toml, "--env", "K=v", "--dir", "data::/d:ro",
                  module, "x")
    assert first.returncode == 0, first.stderr
    assert out(first) == want
    # Upstream's order (`MODULE --wasmcfgfile FILE`), as `enarx run` accepts it.
    upstream = enarx("identity", module, "--wasmcfgfile", toml, "--env", "K=v",
                     "--dir", "data::/d:ro", "x")
    assert upstream.returncode == 0, upstream.stderr
    assert out(upstream) == want
    assert out(enarx("identity", "--wasmcfgfile", toml, module)) != want
    via_env = enarx("identity", "--env", "K=v", "--dir", "data::/d:ro", module, "x",
                    env={"ENARX_WASMCFGFILE": str(toml)})
    assert out(via_env) == want


def test_json(enarx: RunEnarx, module: Path) -> None:
    proc = enarx("identity", "--json", module, "a")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["identity"] == identity_of(WAT, None, extra_args=["a"])
    assert doc["module_sha384"] == hashlib.sha384(WAT).hexdigest()
    assert doc["config"]["args"] == ["a"]
    assert doc["config"]["files"][0] == {"kind": "stdin", "name": "stdin"}


def test_listed_in_help_and_has_its_own(enarx: RunEnarx) -> None:
    assert "identity" in enarx("--help").stdout.decode()
    own = enarx("identity", "--help")
    assert own.returncode == 0 and "--wasmcfgfile" in own.stdout.decode()
    assert "sha384" in own.stdout.decode()


@pytest.mark.parametrize(("args", "fragment"), [
    (["nope.wasm"], "no such module"),
    (["--wasmcfgfile", "missing.toml", "{module}"], "no such file"),
    (["--wasmcfgfile", "{bad}", "{module}"], "unknown key"),
    (["--env", "NOEQUALS", "{module}"], "invalid --env"),
    (["--env", "FD_COUNT=1", "{module}"], "invalid --env"),
    (["--dir", "::x", "{module}"], "invalid --dir"),
])
def test_bad_input_is_exit_2_with_a_hint(enarx: RunEnarx, module: Path, tmp_path: Path,
                                         args: list[str], fragment: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n")
    proc = enarx("identity", *[a.format(module=module, bad=bad) for a in args], cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert fragment in err and "hint:" in err and "Traceback" not in err
    assert proc.stdout == b""


def test_run_only_options_are_accepted_and_do_not_count(enarx: RunEnarx, module: Path,
                                                        tmp_path: Path) -> None:
    # `enarx run`'s other options, after MODULE (upstream's order) or before it, are read as
    # options by both commands, never passed to the guest: the identity is unchanged.
    want = identity_of(WAT, None, extra_args=["x"])
    ca = tmp_path / "ca.pem"
    ca.write_text("unused")
    after = enarx("identity", module, "--backend", "nil", "--timeout", "5", "--no-cache",
                  "--max-memory", "64M", "x")
    assert after.returncode == 0, after.stderr
    assert out(after) == want
    before = enarx("identity", "--fuel", "100", "--steward", "https://127.0.0.1:1",
                   "--steward-ca", ca, module, "x")
    assert before.returncode == 0, before.stderr
    assert out(before) == want
    assert "--backend" not in enarx("identity", "--help").stdout.decode()


# --- packages (a directory or a SPEC): the tree digest `enarx deploy` attests ----------------


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "data").mkdir(parents=True)
    (root / "main.wasm").write_bytes(WAT)
    (root / "Enarx.toml").write_text('args = ["--serve"]\n')
    (root / "data" / "input.txt").write_bytes(b"42\n")
    return root


def _tree_identity(root: Path) -> str:
    # Independent of enarx.package: sha384 over the documented JCS directory bytes.
    import base64

    def entry(data: bytes, media: str) -> dict[str, object]:
        return {"digest": {"sha-256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
                           "sha-384": base64.b64encode(hashlib.sha384(data).digest()).decode()},
                "length": len(data), "type": media}

    def jcs(obj: object) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    data = jcs({"input.txt": entry(b"42\n", "text/plain")})
    top = jcs({"Enarx.toml": entry((root / "Enarx.toml").read_bytes(), "application/toml"),
               "data": entry(data, "application/vnd.drawbridge.directory.v1+json"),
               "main.wasm": entry(WAT, "application/wasm")})
    return "sha384:" + hashlib.sha384(top).hexdigest()


def test_a_package_directory_or_file_spec_prints_its_tree_digest(enarx: RunEnarx,
                                                                 package: Path) -> None:
    want = _tree_identity(package)
    for arg in (str(package), f"file://{package}"):
        proc = enarx("identity", arg)
        assert proc.returncode == 0, proc.stderr
        assert out(proc) == want
    # differs from the module's own workload identity (another domain)
    assert want != out(enarx("identity", package / "main.wasm"))
    doc = json.loads(enarx("identity", "--json", package).stdout)
    assert doc["identity"] == doc["tree"] == want and doc["encrypted"] is False
    assert doc["files"]["data/input.txt"] == {"length": 3, "type": "text/plain"}
    (package / "data" / "input.txt").write_bytes(b"43\n")  # data is part of the identity
    assert out(enarx("identity", package)) != want


@pytest.mark.parametrize(("args", "fragment"), [
    (["--env", "K=v", "{pkg}"], "do not apply to a package"),
    (["{pkg}", "arg"], "do not apply to a package"),
    (["{empty}"], "no main.wasm"),
    (["http://192.0.2.1/alice/app:1.0.0"], "plain HTTP"),
    (["alice/app:1.0.0"], "names no registry host"),
    (["oci://127.0.0.1:5000/Bad:1"], "not an OCI repository name"),
])
def test_bad_package_input_is_exit_2_with_a_hint(enarx: RunEnarx, package: Path,
                                                 tmp_path: Path, args: list[str],
                                                 fragment: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_bytes(b"")
    proc = enarx("identity", *[a.format(pkg=package, empty=empty) for a in args])
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert fragment in err and "hint:" in err and "Traceback" not in err
    assert proc.stdout == b""


def test_an_encrypted_package_has_its_plaintext_identity(enarx: RunEnarx, package: Path,
                                                         tmp_path: Path) -> None:
    from enarx.package.crypt import encrypt_package

    enc = tmp_path / "enc"
    encrypt_package(package, enc)
    proc = enarx("identity", "--json", enc)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["encrypted"] is True
    assert doc["identity"] == _tree_identity(package) != doc["tree"]


def test_a_registry_spec_gives_the_identity_of_the_directory(enarx: RunEnarx, package: Path,
                                                             tmp_path: Path) -> None:
    # A real `enarx registry serve` on 127.0.0.1 (plain http is allowed to loopback).
    from tests.registry.server import RegistryServer

    reg = RegistryServer(tmp_path / "registry")
    try:
        env = {"ENARX_REGISTRY_TOKEN": reg.token("alice")}
        for cmd in (["user", "register", f"{reg.url}/alice"],
                    ["repo", "register", f"{reg.url}/alice/app"],
                    ["package", "publish", f"{reg.url}/alice/app:1.0.0", str(package)]):
            proc = enarx(*cmd, env=env)
            assert proc.returncode == 0, proc.stderr
        want = _tree_identity(package)
        assert out(enarx("identity", f"{reg.url}/alice/app:1.0.0")) == want
        via_default = enarx("identity", "alice/app:1.0.0", env={"ENARX_REGISTRY": reg.url})
        assert out(via_default) == want
        missing = enarx("identity", f"{reg.url}/alice/app:2.0.0")
        assert missing.returncode != 0 and b"Traceback" not in missing.stderr
        assert missing.stdout == b""
    finally:
        reg.stop()
