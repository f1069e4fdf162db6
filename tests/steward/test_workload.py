"""enarx.workload: the exact bytes of a workload identity and what changes it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx import config as cfg
from enarx.errors import UsageError
from enarx.flags import parse_dir_spec
from enarx.workload import (
    UNBOUND,
    effective_config,
    identity_matches,
    identity_of,
    parse_identity,
    workload_identity,
)

MODULE = b"\0asm\x01\0\0\0"
_IDENT = re.compile(r"sha384:[0-9a-f]{96}")
STDIO = [
    {"kind": "stdin", "name": "stdin"},
    {"kind": "stdout", "name": "stdout"},
    {"kind": "stderr", "name": "stderr"},
]


def by_hand(module: bytes, config: dict[str, Any]) -> str:
    """An independent computation of the documented bytes (ASCII-only configs: for those,
    sorted compact json.dumps is RFC 8785)."""
    jcs = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = (b"enarx-workload-v1\n" + hashlib.sha384(module).digest()
               + hashlib.sha384(jcs.encode()).digest())
    return "sha384:" + hashlib.sha384(message).hexdigest()


def test_default_config_and_exact_bytes() -> None:
    eff = effective_config(None)
    assert eff == {
        "args": [],
        "env": {"FD_COUNT": "3", "FD_NAMES": "stdin:stdout:stderr"},
        "files": STDIO,
    }
    ident = workload_identity(MODULE, eff)
    assert ident == by_hand(MODULE, eff)
    assert ident == identity_of(MODULE, None)
    assert len(parse_identity(ident)) == 48


def test_enarx_toml_with_default_files_equals_no_config() -> None:
    toml = '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
    assert identity_of(MODULE, cfg.loads(toml)) == identity_of(MODULE, None)


def test_command_line_merges_like_enarx_run() -> None:
    conf = cfg.loads('args = ["a"]\n[env]\nK = "toml"\nL = "x"\n')
    eff = effective_config(conf, extra_args=["b"], extra_env=[("K", "flag")],
                           extra_dirs=[parse_dir_spec("/srv/data::/data:ro")])
    assert eff["args"] == ["a", "b"]
    assert eff["env"] == {"FD_COUNT": "4", "FD_NAMES": "stdin:stdout:stderr:/data",
                          "K": "flag", "L": "x"}
    assert eff["files"][3] == {"kind": "dir", "name": "/data", "guest": "/data",
                               "readonly": True}
    assert identity_of(MODULE, conf, extra_args=["b"], extra_env=[("K", "flag")],
                       extra_dirs=[parse_dir_spec("/srv/data::/data:ro")]) == by_hand(MODULE, eff)


def test_network_entries_are_covered() -> None:
    conf = cfg.loads(
        '[[files]]\nkind = "listen"\nname = "L"\nport = 8443\n'
        '[[files]]\nkind = "connect"\nhost = "db.example"\nport = 5432\nprot = "tcp"\n'
    )
    eff = effective_config(conf)
    assert eff["files"] == [
        {"kind": "listen", "name": "L", "prot": "tls", "addr": "::", "port": 8443,
         "client_ca": None},
        {"kind": "connect", "name": "db.example", "prot": "tcp", "host": "db.example",
         "port": 5432, "trust": "system"},
    ]


@pytest.mark.parametrize("change", [
    {"module": MODULE + b"\0"},
    {"extra_args": ["x"]},
    {"extra_env": [("A", "1")]},
    {"extra_dirs": [parse_dir_spec("/d")]},
    {"extra_dirs": [parse_dir_spec("/d:ro")]},
    {"fd_env": False},
])
def test_what_the_guest_sees_changes_the_identity(change: dict[str, Any]) -> None:
    base = identity_of(MODULE, None, extra_dirs=[parse_dir_spec("/e")])
    module = change.pop("module", MODULE)
    dirs = change.pop("extra_dirs", [])
    assert identity_of(module, None, extra_dirs=[parse_dir_spec("/e"), *dirs], **change) != base


def test_what_the_guest_does_not_see_keeps_the_identity() -> None:
    plain = cfg.loads("args = []\n")
    tuned = cfg.loads('steward = "https://steward.example"\n[limits]\nmax_memory = "64M"\n'
                      "timeout = 5\nfuel = 1000\n")
    assert identity_of(MODULE, plain) == identity_of(MODULE, tuned)
    # The host path of a pre-open is the host's business; guest path and mode are not.
    assert identity_of(MODULE, None, extra_dirs=[parse_dir_spec("/a::/data")]) == \
        identity_of(MODULE, None, extra_dirs=[parse_dir_spec("/b/c::/data")])


def test_an_encrypted_directory_is_part_of_the_identity() -> None:
    """A host that drops the encryption from a dir entry (serving forged plaintext) or
    swaps the steward key changes the attested identity; a plain entry's is unchanged."""
    def ident(*dirs: str, toml: str = "") -> str:
        return identity_of(MODULE, cfg.loads(toml) if toml else None,
                           extra_dirs=[parse_dir_spec(d) for d in dirs])

    plain = ident("/a::/data")
    local = ident("/a::/data:enc=/k1")
    assert local != plain and local == ident("/b::/data:enc=/other/k2")  # key path: host's
    assert effective_config(None, extra_dirs=[parse_dir_spec("/a::/data:enc=k")])[
        "files"][3] == {"kind": "dir", "name": "/data", "guest": "/data", "readonly": False,
                        "encryption_key": "file"}
    entry = '[[files]]\nkind = "dir"\nhost = "d"\nguest = "/data"\n'
    steward = ident(toml=entry + 'encryption_key = "app/dirkey/v1"\n')
    assert steward != ident(toml=entry) and steward != local
    assert steward != ident(toml=entry + 'encryption_key = "app/dirkey/v2"\n')


def test_env_order_does_not_matter_but_unicode_is_exact() -> None:
    a = identity_of(MODULE, None, extra_env=[("A", "1"), ("B", "é")])
    b = identity_of(MODULE, None, extra_env=[("B", "é"), ("A", "1")])
    assert a == b
    assert a != identity_of(MODULE, None, extra_env=[("A", "1"), ("B", "e\u0301")])


def test_non_utf8_argument_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as e:
        identity_of(MODULE, None, extra_args=["\udcff"])
    assert e.value.hint and "UTF-8" in e.value.hint


@pytest.mark.parametrize("bad", [
    "", "sha384:", "sha256:" + "0" * 64, "sha384:" + "A" * 96, "sha384:" + "0" * 95,
    "sha384:" + "0" * 97, " sha384:" + "0" * 96, UNBOUND, None, 12,
])
def test_parse_identity_refuses_malformed(bad: Any) -> None:
    with pytest.raises(UsageError) as e:
        parse_identity(bad)
    assert e.value.exit_code == 2 and e.value.hint


@given(st.text(max_size=120))
def test_parse_identity_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(UsageError):
        assert len(parse_identity(text)) == 48


def test_identity_matches() -> None:
    ident = identity_of(MODULE, None)
    assert identity_matches(ident, ident)
    assert not identity_matches(ident, None)
    assert not identity_matches(ident, UNBOUND)
    assert not identity_matches(ident, ident[:-1] + ("0" if ident[-1] != "0" else "1"))


def test_documented_example_is_a_fixed_known_answer() -> None:
    # docs/steward.md prints this value: changing the format must change the docs (and the
    # version in the domain prefix), never silently.
    wat = b'(module (func (export "_start")) (memory (export "memory") 1))'
    assert identity_of(wat, None) == (
        "sha384:e2c811757d8fb14b842fed23b64797cca3bc3ced3111b09651ffaccaf17233f9e6839a66595192"
        "60451632b0065ea6ed")


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_fuzz_any_json_config_gives_an_identity_or_a_usage_error(config: dict[str, Any]) -> None:
    # NaN/inf, integers beyond 2**53 and lone surrogates cannot be canonicalized.
    with contextlib.suppress(UsageError):
        assert _IDENT.fullmatch(workload_identity(MODULE, config))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                        max_size=12), max_size=5),
       st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True),
                       st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                               max_size=12), max_size=4))
def test_identity_matches_an_independent_canonicalization(args: list[str],
                                                          env: dict[str, str]) -> None:
    env.pop("FD_COUNT", None)
    env.pop("FD_NAMES", None)
    eff = effective_config(None, extra_args=args, extra_env=list(env.items()))
    assert identity_of(MODULE, None, extra_args=args, extra_env=list(env.items())) == \
        by_hand(MODULE, eff)


def test_secret_declarations_count_in_the_identity_but_not_without_them() -> None:
    plain = cfg.loads("")
    assert "secrets" not in effective_config(plain)  # identities without secrets unchanged
    one = cfg.loads('[[secrets]]\nresource = "app/key/db"\nenv = "DB"\n')
    eff = effective_config(one)
    assert eff["secrets"] == [{"resource": "app/key/db", "env": "DB"}]
    as_file = cfg.loads('[[secrets]]\nresource = "app/key/db"\nfile = "db"\n')
    other = cfg.loads('[[secrets]]\nresource = "app/key/xx"\nenv = "DB"\n')
    ids = {identity_of(MODULE, c) for c in (plain, one, as_file, other)}
    assert len(ids) == 4  # the host cannot re-route a secret without changing the identity
    assert effective_config(as_file)["files"][-1] == {
        "kind": "dir", "name": "secrets", "guest": "/run/secrets", "readonly": True}


def test_launch_binding_of_an_identity() -> None:
    from enarx.workload import launch_binding

    ident = "sha384:" + hashlib.sha384(b"x").hexdigest()
    raw = bytes.fromhex(ident.removeprefix("sha384:"))
    assert launch_binding(ident, 48) == raw  # TDX MRCONFIGID: the digest itself
    assert launch_binding(ident, 32) == hashlib.sha256(raw).digest()  # SNP HOST_DATA
    with pytest.raises(UsageError, match="no launch binding of 64 bytes"):
        launch_binding(ident, 64)
    with pytest.raises(UsageError, match="invalid workload identity"):
        launch_binding("sha256:" + "0" * 64, 32)
