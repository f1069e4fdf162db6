"""Where the registry token comes from: env, then a credential helper, then the keyring;
helper failures are typed errors that never echo what the helper printed on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from enarx.package.credentials import CredentialError, registry_token


def _helper(tmp_path: Path, body: str) -> str:
    p = tmp_path / "helper"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o700)
    return str(p)


def test_env_wins_over_the_helper(tmp_path: Path) -> None:
    helper = _helper(tmp_path, "echo from-helper")
    env = {"ENARX_REGISTRY_TOKEN": " from-env\n", "ENARX_CREDENTIAL_HELPER": helper}
    assert registry_token("h:1", env=env) == "from-env"


def test_helper_gets_show_and_the_host(tmp_path: Path) -> None:
    helper = _helper(tmp_path, '[ "$1" = show ] && echo "tok-$2"')
    assert registry_token("127.0.0.1:8443", env={"ENARX_CREDENTIAL_HELPER": helper}) \
        == "tok-127.0.0.1:8443"
    # the flag beats the environment variable
    other = tmp_path / "other"
    other.write_text("#!/bin/sh\necho flag\n")
    other.chmod(0o700)
    assert registry_token("h", helper=str(other),
                          env={"ENARX_CREDENTIAL_HELPER": helper}) == "flag"


def test_no_source_is_anonymous(tmp_path: Path) -> None:
    assert registry_token("h", env={}) is None
    assert registry_token("h", env={"ENARX_CREDENTIAL_HELPER": _helper(tmp_path, "true")}) \
        is None


@pytest.mark.parametrize(("body", "message"), [
    ("echo secret-on-stderr >&2; exit 5", "exited with 5"),
    ("echo 'two words'", "did not give a usable token"),
    ("printf '\\377\\376'", "non-UTF-8"),
])
def test_helper_failures(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CredentialError) as e:
        registry_token("h", env={"ENARX_CREDENTIAL_HELPER": _helper(tmp_path, body)})
    assert message in e.value.message and e.value.exit_code == 2
    assert "secret-on-stderr" not in e.value.message


def test_missing_helper(tmp_path: Path) -> None:
    with pytest.raises(CredentialError) as e:
        registry_token("h", env={"ENARX_CREDENTIAL_HELPER": str(tmp_path / "nope")})
    assert "not found" in e.value.message
