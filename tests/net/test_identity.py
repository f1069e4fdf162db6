"""The Keep's TLS identity: one per run, passed explicitly, no process-global state.

Runs the real agent in-process (twice in one process: a global identity would leak from the
first run into the second) and reads the fingerprints the Keep prints for its listeners.
"""

from __future__ import annotations

import re

import pytest
import wasmtime

from enarx import config
from enarx.keep import tls
from enarx.keep.agent import Workload, run_workload
from enarx.platform.nil import NilBackend
from enarx.runtime.run import RunLimits
from tests.net.netkeep import listen, toml

NOOP = bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))
_FP = re.compile(r"\((self-signed, one-time key|issued to this Keep)\) sha256 Fingerprint=(\S+)")


def _run(capsys: pytest.CaptureFixture[str], identity: tls.KeepIdentity | None = None
         ) -> list[tuple[str, str]]:
    conf = config.loads(toml(listen("a", "tls"), listen("b", "tls")))
    extra = {} if identity is None else {"identity": identity}
    code = run_workload(Workload(wasm=NOOP), conf, NilBackend(), limits=RunLimits(1 << 20),
                        stdio=(0, 1, 2), **extra)
    assert code == 0
    return _FP.findall(capsys.readouterr().err)


def test_each_run_gets_its_own_identity_shared_by_its_listeners(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = _run(capsys), _run(capsys)
    assert len(first) == len(second) == 2
    assert first[0] == first[1] and second[0] == second[1]  # one identity per run
    assert first[0][1] != second[0][1]  # a fresh one-time key for every run
    assert first[0][0] == "self-signed, one-time key"


def test_an_identity_handed_to_the_agent_is_the_one_presented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = tls.self_signed("steward-issued")
    issued = tls.KeepIdentity(key=base.key, chain=base.chain, self_signed=False)
    shown = _run(capsys, issued)
    assert shown == [("issued to this Keep", issued.fingerprint())] * 2
    assert _run(capsys)[0][1] != issued.fingerprint()  # nothing stays behind for later runs
