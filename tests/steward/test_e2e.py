"""End to end: a real `enarx steward serve` on 127.0.0.1, `enarx run --steward` on the sim
backend, and real clients (curl, openssl s_client, `enarx verify-keep`) against the Keep's
TLS listener. Refusals: the workload never starts and the failed rules are on stderr."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.keep.deploykit import Env, Steward, make_env, steward
from tests.net.netkeep import _FP_RE, _LISTEN_RE, _Lines, guest, listen, need_tool, toml

ENARX = Path(sys.executable).with_name("enarx")
HELLO = "Hello, world!"


World = Env  # a sim chain, its ARK file, a private HOME


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> World:
    # As a user does: the sim ARK a steward may trust comes from `enarx attest report`.
    return make_env(tmp_path_factory.mktemp("e2e"), module_cache,
                    tmp_path_factory.getbasetemp() / "sim-state")


@pytest.fixture(scope="module")
def keep_setup(world: World) -> tuple[Path, Path, str]:
    """net_poll with one TLS listener, its Enarx.toml, and the identity `enarx identity` prints."""
    cfg = world.root / "Enarx.toml"
    cfg.write_text(toml(listen("web", "tls")))
    wasm = guest("net_poll.c")
    r = world.run("identity", "--wasmcfgfile", cfg, wasm, "4")
    assert r.returncode == 0, r.stderr
    ident = r.stdout.strip()
    assert re.fullmatch(r"sha384:[0-9a-f]{96}", ident), r.stdout
    return cfg, wasm, ident


@pytest.fixture(scope="module")
def sim_steward(world: World, keep_setup: tuple[Path, Path, str]) -> Iterator[Steward]:
    policy = (f'allow = ["sim"]\ntrust_roots = ["{world.ark}"]\n\n'
              f'[workload]\nallow = ["{keep_setup[2]}"]\n')
    yield from steward(world, "sim-steward", policy)


@pytest.fixture(scope="module")
def strict_steward(world: World) -> Iterator[Steward]:
    yield from steward(world, "strict-steward", f'trust_roots = ["{world.ark}"]\n')


@pytest.fixture(scope="module")
def nil_steward(world: World) -> Iterator[Steward]:
    yield from steward(world, "nil-steward", 'allow = ["nil"]\n')


def test_an_attested_keep_serves_curl_openssl_and_verify_keep(
    world: World, sim_steward: Steward, keep_setup: tuple[Path, Path, str],
) -> None:
    cfg, wasm, ident = keep_setup
    dirs = [Path(world.env["HOME"]), Path(world.env["ENARX_CACHE_DIR"])]  # state, cache
    before = {p for d in dirs for p in d.rglob("*") if p.is_file()}
    proc = subprocess.Popen(
        [str(ENARX), "run", "--backend", "sim", "--steward", sim_steward.url, "--steward-ca",
         str(sim_steward.ca), "--wasmcfgfile", str(cfg), str(wasm), "4"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=world.env)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    err, out = _Lines(proc.stderr), _Lines(proc.stdout)
    try:
        attested = err.wait_for(r"enarx: attested to .*: workload (sha384:[0-9a-f]{96})", 120)
        assert attested and attested.group(1) == ident, err.text
        m = err.wait_for(_LISTEN_RE.pattern, 30)
        assert m, err.text
        port = int(m.group(4))
        fp = err.wait_for(_FP_RE.pattern, 10)
        assert fp and "(issued to this Keep)" in fp.string, err.text
        addr = f"127.0.0.1:{port}"

        curl = subprocess.run(
            [need_tool("curl"), "--silent", "--show-error", "--http0.9", "--cacert",
             str(sim_steward.ca), f"https://{addr}/"], capture_output=True, timeout=30)
        assert curl.returncode == 0, curl.stderr
        assert curl.stdout == b"3:GET / HTTP/1.1\r\n"

        ossl = subprocess.run(
            [need_tool("openssl"), "s_client", "-connect", addr, "-CAfile",
             str(sim_steward.ca), "-verify_return_error", "-verify_ip", "127.0.0.1",
             "-ign_eof"], input=b"hello\n", capture_output=True, timeout=30)
        assert ossl.returncode == 0, ossl.stdout + ossl.stderr
        assert b"Verify return code: 0 (ok)" in ossl.stdout
        assert b"3:hello" in ossl.stdout

        good = world.run("verify-keep", addr, "--ca", sim_steward.ca, "--trust-root",
                         world.ark, "--workload", ident, "--json")
        assert good.returncode == 0, good.stderr
        report = json.loads(good.stdout)
        assert report["platform"] == "snp" and report["workload"] == ident
        assert report["tcb_status"] == "UpToDate" and len(report["measurement"]) == 96
        assert report["trust_root"] == "explicit"

        wrong = world.run("verify-keep", addr, "--ca", sim_steward.ca, "--trust-root",
                          world.ark, "--workload", "sha384:" + "0" * 96)
        assert wrong.returncode == 4, wrong.stderr
        assert "keep.workload" in wrong.stderr
        assert proc.wait(60) == 0, err.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        out.join(5)
        err.join(5)
        proc.stdout.close()
        proc.stderr.close()
    # The one-time key never left memory: nothing new in the state or cache dirs holds a key.
    for path in {p for d in dirs for p in d.rglob("*") if p.is_file()} - before:
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data and b"\x30\x77\x02\x01\x01\x04\x20" not in data, path


def test_a_workload_the_policy_does_not_allow_never_starts(
    world: World, sim_steward: Steward,
) -> None:
    r = world.run("run", "--backend", "sim", "--steward", sim_steward.url, "--steward-ca",
                  sim_steward.ca, guest("hello.c"))
    assert r.returncode == 4, r.stderr
    assert HELLO not in r.stdout
    assert "the steward refused this Keep's attestation" in r.stderr
    assert re.search(r"^  - workload\S*: ", r.stderr, re.M), r.stderr


def test_sim_evidence_is_refused_unless_the_policy_allows_sim(
    world: World, strict_steward: Steward,
) -> None:
    r = world.run("run", "--backend", "sim", "--steward", strict_steward.url, "--steward-ca",
                  strict_steward.ca, guest("hello.c"))
    assert r.returncode == 4, r.stderr
    assert HELLO not in r.stdout
    assert re.search(r"^  - \S*sim\S*: ", r.stderr, re.M), r.stderr
    assert "Traceback" not in r.stderr


def test_nil_is_refused_unless_the_policy_allows_nil(
    world: World, strict_steward: Steward, nil_steward: Steward,
) -> None:
    refused = world.run("run", "--backend", "nil", "--steward", strict_steward.url,
                        "--steward-ca", strict_steward.ca, guest("hello.c"))
    assert refused.returncode == 4, refused.stderr
    assert HELLO not in refused.stdout
    assert re.search(r"^  - \S*nil\S*: ", refused.stderr, re.M), refused.stderr
    allowed = world.run("run", "--backend", "nil", "--steward", nil_steward.url,
                        "--steward-ca", nil_steward.ca, guest("hello.c"))
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith(HELLO)
    assert "enarx: attested to " in allowed.stderr


def test_the_keep_trusts_the_steward_only_through_steward_ca(
    world: World, sim_steward: Steward, strict_steward: Steward,
) -> None:
    r = world.run("run", "--backend", "sim", "--steward", sim_steward.url, "--steward-ca",
                  strict_steward.ca, guest("hello.c"))
    assert r.returncode == 4, r.stderr
    assert "steward.tls" in r.stderr and HELLO not in r.stdout
