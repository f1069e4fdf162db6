"""Enarx.toml: the upstream schema, our extensions, and errors that point at the fault."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx import config
from enarx.errors import ConfigError, UsageError

UPSTREAM_EXAMPLE = """\
args = ["--argument1", "--argument2=foo"]
steward = "https://attest.example.com"

[env]
VAR1 = "var1"
VAR2 = "var2"

[[files]]
kind = "null"

[[files]]
kind = "stdout"

[[files]]
kind = "stderr"

[[files]]
name = "LISTEN"
kind = "listen"
prot = "tls"
port = 12345

[[files]]
name = "CONNECT"
kind = "connect"
prot = "tcp"
host = "127.0.0.1"
port = 23456
"""


def test_upstream_example_loads_with_upstream_defaults() -> None:
    c = config.loads(UPSTREAM_EXAMPLE)
    assert c.args == ["--argument1", "--argument2=foo"]
    assert c.steward == "https://attest.example.com"
    assert c.env == {"VAR1": "var1", "VAR2": "var2"}
    kinds = [f.kind for f in c.effective_files]
    assert kinds == ["null", "stdout", "stderr", "listen", "connect"]
    listen = c.effective_files[3]
    assert listen.addr == "::" and listen.effective_port == 12345
    assert c.fd_environment() == {"FD_COUNT": "5", "FD_NAMES": "null:stdout:stderr:LISTEN:CONNECT"}


def test_no_files_means_stdio() -> None:
    c = config.loads("")
    assert [f.kind for f in c.effective_files] == ["stdin", "stdout", "stderr"]
    assert c.fd_environment()["FD_NAMES"] == "stdin:stdout:stderr"


@pytest.mark.parametrize(("prot", "port"), [("tls", 443), ("tcp", 80)])
def test_listen_port_defaults(prot: str, port: int) -> None:
    c = config.loads(f'[[files]]\nkind = "listen"\nname = "L"\nprot = "{prot}"\n')
    assert c.effective_files[0].effective_port == port


def test_connect_name_defaults_to_host() -> None:
    c = config.loads('[[files]]\nkind = "connect"\nhost = "db.internal"\nport = 5432\n')
    assert c.fd_environment()["FD_NAMES"] == "db.internal"


def test_dir_extension() -> None:
    c = config.loads('[[files]]\nkind = "dir"\nhost = "data"\nguest = "/data"\nreadonly = true\n')
    d = c.effective_files[0]
    assert (d.host, d.guest_path, d.readonly) == ("data", "/data", True)
    assert config.file_name(d) == "/data"


def test_limits_extension() -> None:
    c = config.loads('[limits]\nmax_memory = "64M"\ntimeout = 2.5\nfuel = 1000\n')
    assert (c.limits.max_memory, c.limits.timeout, c.limits.fuel) == (64 << 20, 2.5, 1000)


CASES = [
    # (toml, expected line, expected key fragment, message fragment)
    ('args = ["a"]\nargz = 1\n', 2, "argz", "unknown key"),
    ('[[files]]\nkind = "stdin"\n\n[[files]]\nkind = "listen"\nname = "L"\nprto = "tcp"\n', 7,
     "files[1].prto", "unknown key"),
    ('[[files]]\nkind = "null"\nname = "a:b"\n', 3, "files[0].name", "may not contain ':'"),
    ('[[files]]\nkind = "socket"\n', 2, "files[0]", "unknown kind 'socket'"),
    ('[[files]]\nkind = "connect"\nhost = "x"\n', 1, "files[0].port", "required key is missing"),
    ('[[files]]\nkind = "listen"\nprot = "tcp"\n', 1, "files[0].name", "required key is missing"),
    ('[[files]]\nkind = "connect"\nhost = "x"\nport = 70000\n', 4, "files[0].port", "65535"),
    ('[limits]\nmax_memory = "12Q"\n', 2, "limits.max_memory", "invalid size"),
    ('[env]\nFD_COUNT = "9"\n', 2, "env", "cannot be overridden"),
    ('args = ["a"\n', 2, None, ""),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), CASES)
def test_errors_name_line_and_key(text: str, line: int, key: str | None, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, path="Enarx.toml")
    err = info.value
    assert err.line == line, err.message
    if key:
        assert err.key is not None and key in err.key
    assert fragment in err.message
    assert err.message.startswith(f"Enarx.toml:{line}:")


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("data", ("data", "data", False)),
        ("./d::/data", ("./d", "/data", False)),
        ("./d::/data:ro", ("./d", "/data", True)),
        ("/srv:ro", ("/srv", "/srv", True)),
    ],
)
def test_dir_flag(flag: str, expected: tuple[str, str, bool]) -> None:
    d = config.parse_dir_flag(flag)
    assert (d.host, d.guest_path, d.readonly) == expected


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("./d::/data:enc=k.key", ("./d", "/data", False, "k.key")),
        ("./d::/data:ro:enc=k.key", ("./d", "/data", True, "k.key")),
        ("./d::/data:enc=k.key:ro", ("./d", "/data", True, "k.key")),
        ("./d:enc=/keys/a:b.key", ("./d", "./d", False, "/keys/a:b.key")),
        ("./d::/data", ("./d", "/data", False, None)),
    ],
)
def test_encrypted_dir_flag(flag: str, expected: tuple[str, str, bool, str | None]) -> None:
    d = config.parse_dir_flag(flag)
    assert (d.host, d.guest_path, d.readonly, d.encryption_key_file) == expected


@pytest.mark.parametrize("flag", ["", "::/x", "a::", "a::/x:enc=", "a::/x:enc=:ro", ":enc=k"])
def test_bad_dir_flag(flag: str) -> None:
    with pytest.raises(UsageError):
        config.parse_dir_flag(flag)


def test_encrypted_dir_entry() -> None:
    c = config.loads('[[files]]\nkind = "dir"\nhost = "d"\nguest = "/d"\n'
                     'encryption_key = "app/dirkey/v1"\n\n'
                     '[[files]]\nkind = "dir"\nhost = "e"\nencryption_key_file = "e.key"\n')
    d, e = c.effective_files
    assert (d.encryption_key, d.encryption_key_file) == ("app/dirkey/v1", None)
    assert (e.encryption_key, e.encryption_key_file) == (None, "e.key")


@pytest.mark.parametrize(("extra", "fragment"), [
    ('encryption_key = "a/b/c"\nencryption_key_file = "k"\n', "not both"),
    ('encryption_key = "../etc/passwd"\n', "not a steward resource path"),
    ('encryption_key_file = ""\n', "may not be empty"),
])
def test_bad_encrypted_dir_entry(extra: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads('[[files]]\nkind = "dir"\nhost = "d"\n' + extra, path="Enarx.toml")
    assert fragment in info.value.message


@pytest.mark.parametrize("flag", ["NOEQUALS", "=v", "FD_NAMES=x"])
def test_bad_env_flag(flag: str) -> None:
    with pytest.raises(UsageError):
        config.parse_env_flag(flag)


@pytest.mark.parametrize(
    ("text", "n"), [("64M", 64 << 20), ("1G", 1 << 30), ("512KiB", 512 << 10), ("4096", 4096)]
)
def test_sizes(text: str, n: int) -> None:
    assert config.parse_size(text) == n


def test_template_is_valid_and_commented() -> None:
    c = config.loads(config.TEMPLATE)
    assert [f.kind for f in c.effective_files] == ["stdin", "stdout", "stderr"]
    assert config.TEMPLATE.count("#") > 10


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_raises_config_error(text: str) -> None:
    try:
        config.loads(text, path="Enarx.toml")
    except ConfigError as e:
        assert e.message.startswith("Enarx.toml")


_FRAGMENTS = st.sampled_from([
    "[[files]]\n", 'kind = "listen"\n', 'kind = "dir"\n', 'name = "a"\n', "port = 99999\n",
    'host = "h"\n', "[limits]\n", 'max_memory = "1Q"\n', "[env]\n", 'FD_COUNT = "1"\n',
    "args = [1]\n", 'prot = "udp"\n', "readonly = 3\n", "timeout = -1\n", "=\n", "[\n",
])


@given(st.lists(_FRAGMENTS, max_size=12))
@settings(max_examples=300, deadline=None)
def test_plausible_configs_parse_or_raise_config_error(parts: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        config.loads("".join(parts))


@pytest.mark.parametrize(
    ("text", "line", "suggestion"),
    [
        ('[[file]]\nkind = "stdin"\n', 1, "files"),
        ('args = []\n[limit]\ntimeout = 3\n', 2, "limits"),
        ('[[files]]\nkind = "dir"\nhost = "d"\ngust = "/d"\n', 4, "guest"),
        ('[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdeer"\n', 4, "stderr"),
    ],
)
def test_typos_get_a_line_and_a_suggestion(text: str, line: int, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, path="Enarx.toml")
    assert info.value.line == line, info.value.message
    assert info.value.hint is not None
    assert info.value.hint.startswith(f"did you mean {suggestion!r}?")


def test_no_suggestion_for_a_far_off_kind() -> None:
    with pytest.raises(ConfigError) as info:
        config.loads('[[files]]\nkind = "socket"\n')
    assert info.value.hint is not None and "did you mean" not in info.value.hint


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("# deep\na = " + "[" * 3000 + "]" * 3000 + "\n", 2),
        ('x = "[[[[ not nesting"\nb = ' + "{c = " * 3000 + "1" + "}" * 3000 + "\n", 2),
    ],
)
def test_deeply_nested_toml_is_a_config_error_with_a_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, path="Enarx.toml")
    assert info.value.line == line
    assert "nested too deeply" in info.value.message and info.value.hint


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('kind = "dir"\nhost = "data\\u0000/etc"', "files[0].host"),
        ('kind = "dir"\nhost = "d"\nguest = "/d\\u0000"', "files[0].guest"),
        ('kind = "connect"\nhost = "h"\nport = 1\ntrust = "ca\\u0000.pem"', "files[0].trust"),
        ('kind = "null"\nname = "n\\u0000"', "files[0].name"),
    ],
)
def test_nul_byte_in_a_path_or_name_names_the_entry(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(f"[[files]]\n{body}\n", path="Enarx.toml")
    assert info.value.key == key and "NUL" in info.value.message
    assert info.value.hint and "\\u0000" in info.value.hint


def test_nul_byte_in_args_or_env_values() -> None:
    for text in ('args = ["a\\u0000b"]\n', '[env]\nA = "x\\u0000"\n'):
        with pytest.raises(ConfigError, match="NUL byte"):
            config.loads(text)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('kind = "listen"\nname = "l"\naddr = "a..b"', "empty DNS label"),
        ('kind = "listen"\nname = "l"\naddr = ".x"', "empty DNS label"),
        ('kind = "connect"\nport = 1\nhost = "' + "a" * 64 + '.example"', "at most 63"),
        ('kind = "connect"\nport = 1\nhost = "' + "é" * 70 + '.example"', "not a valid DNS label"),
        ('kind = "connect"\nport = 1\nhost = "' + "a." * 127 + 'a"', "at most 253"),
    ],
)
def test_bad_dns_names_are_config_errors(body: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(f"[[files]]\n{body}\n", path="Enarx.toml")
    assert fragment in info.value.message and info.value.line is not None
    assert info.value.hint and "63 bytes" in info.value.hint


@pytest.mark.parametrize(
    "host", ["example.com", "example.com.", "127.0.0.1", "::1", "fe80::1%lo", "bücher.example",
             "a" * 63 + ".example", "localhost"]
)
def test_good_host_names_pass(host: str) -> None:
    name = '\nname = "n"' if ":" in host else ""
    c = config.loads(f'[[files]]\nkind = "connect"\nport = 1\nhost = "{host}"{name}\n')
    assert c.files is not None and c.files[0].host == host  # type: ignore[union-attr]


def test_steward_and_steward_ca_keys() -> None:
    c = config.loads('steward = "https://steward.example:3000"\nsteward_ca = "ca.pem"\n')
    assert (c.steward, c.steward_ca) == ("https://steward.example:3000", "ca.pem")
    for bad in ("http://steward.example", "steward.example", "https://", "https://x:99999"):
        with pytest.raises(ConfigError) as e:
            config.loads(f'steward = "{bad}"\n', path="Enarx.toml")
        assert e.value.key == "steward" and e.value.line == 1
        assert "must be an https:// URL" in e.value.message


# --- [[secrets]] (enarx.secrets) ------------------------------------------------------------


SECRETS = """\
[env]
MODE = "x"

[[secrets]]
resource = "app/key/db"
env = "DB"
file = "db"

[[secrets]]
resource = "app/key/api"
file = "api"
"""


def test_secrets_load_and_add_the_in_memory_directory() -> None:
    c = config.loads(SECRETS)
    assert [(s.resource, s.env, s.file) for s in c.secrets] == [
        ("app/key/db", "DB", "db"), ("app/key/api", None, "api")]
    last = c.effective_files[-1]
    assert (last.kind, last.guest_path, last.readonly) == ("dir", "/run/secrets", True)
    assert c.fd_environment() == {"FD_COUNT": "4", "FD_NAMES": "stdin:stdout:stderr:secrets"}


def test_env_only_secrets_add_no_directory() -> None:
    c = config.loads('[[secrets]]\nresource = "a/b/c"\nenv = "X"\n')
    assert [f.kind for f in c.effective_files] == ["stdin", "stdout", "stderr"]


@pytest.mark.parametrize(("entry", "fault"), [
    ('resource = "a/b"\nenv = "X"', "not a steward resource path"),
    ('resource = "a/b/c/d"\nenv = "X"', "not a steward resource path"),
    ('resource = ".a/b/c"\nenv = "X"', "not a steward resource path"),
    ('resource = "a/b/c"', "needs env, file or both"),
    ('resource = "a/b/c"\nfile = "x/y"', "not a file name"),
    ('resource = "a/b/c"\nfile = ".."', "not a file name"),
    ('resource = "a/b/c"\nenv = "FD_COUNT"', "FD_COUNT"),
    ('resource = "a/b/c"\nenv = "MODE"', "also set in [env]"),
    ('resource = "a/b/c"\nenv = "DB"', "used by two secrets"),
    ('resource = "a/b/c"\nfile = "db"', "used by two secrets"),
    ('resource = "a/b/c"\nenv = "Y"\nvalue = "inline"', "value"),
])
def test_bad_secrets_are_refused_naming_the_fault(entry: str, fault: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fault)):
        config.loads(SECRETS + "\n[[secrets]]\n" + entry + "\n")
