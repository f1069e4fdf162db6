"""``enarx deploy --backend kvm``: the whole deploy runs inside one VM Keep.

The host sends the agent a request with ``mode = "deploy"`` and a ``deploy`` table (the SPEC,
the flags, the PEM files the flags name, the registry token); inside, the agent runs
``enarx deploy --backend nil`` as the VM's runtime, so resolving, attesting (with a
steward), fetching, verifying, decrypting and running all happen in the VM. The host only
relays stdio; the VM gets a NIC for outward connections (registry, steward), with the
host's loopback reachable as on ``nil`` (:mod:`enarx.vm.guestnet`). The ``listen`` entries of
a plaintext package's Enarx.toml are forwarded as for ``enarx run`` (the host reads that
file only for this; an encrypted package's listeners stay unforwarded).

:func:`deploy_in_vm` is the host side, :func:`inner_command` the guest side (called by the
agent). ``file://`` SPECs are refused: the package directory is on the host.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enarx.errors import EnarxError, UsageError

__all__ = ["MODE", "deploy_in_vm", "inner_command"]

#: The request's ``mode`` for a deploy (absent: ``enarx run``).
MODE = "deploy"
_PEMS = ("steward_ca", "signer", "ca_bundle")


def _read_text(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} {path}: cannot read: {getattr(e, 'strerror', None) or e}",
                         hint="give a PEM file") from None


def deploy_in_vm(spec: str, *, warn: Callable[[str], None], steward: str | None = None,
                 steward_ca: str | None = None, signer: str | None = None,
                 ca_bundle: str | None = None, token: str | None = None,
                 registry: str | None = None, allow_insecure: bool = False,
                 max_memory: int | None = None, timeout: float | None = None,
                 fuel: int | None = None) -> int:
    """Deploy ``spec`` in a fresh VM Keep; the workload's exit code."""
    from enarx.package.spec import parse_spec
    from enarx.vm.launcher import VmRequest, run_in_vm
    from enarx.vm.network import NetSpec, check_ports, describe, plan, request

    parsed = parse_spec(spec, default_host=registry)
    if parsed.kind == "file":
        raise UsageError(f"{spec}: a file:// package is on the host, not in the VM Keep",
                         hint="publish it to a registry (`enarx registry serve`, then "
                         "`enarx package publish`) and deploy from there, or use "
                         "--backend nil/sim")
    table: dict[str, Any] = {"spec": spec, "allow_insecure": allow_insecure,
                             "registry": registry, "steward": steward, "token": token,
                             "max_memory": max_memory, "timeout": timeout, "fuel": fuel}
    for key, path, what in (("steward_ca", steward_ca, "steward CA"),
                            ("signer", signer, "--signer"),
                            ("ca_bundle", ca_bundle, "--ca-bundle")):
        table[key] = None if path is None else _read_text(path, what)
    files = _package_files(parsed, token=token, ca_bundle=ca_bundle, registry=registry,
                           allow_insecure=allow_insecure, warn=warn)
    # outward connections (registry, steward) always; the package's listeners forwarded
    net = plan(files, outbound=True) or NetSpec(outbound=True)
    check_ports(net)
    for line in describe(net):
        print(line, file=sys.stderr, flush=True)
    req = VmRequest(wasm=b"", argv0="main.wasm", max_memory=max_memory, net=net,
                    extra={"mode": MODE, "deploy": table, "net": request(net, {})})
    sys.stdout.flush()
    return run_in_vm(req, warn=warn)


def _package_files(spec: Any, *, token: str | None, ca_bundle: str | None,
                   registry: str | None, allow_insecure: bool,
                   warn: Callable[[str], None]) -> Any:
    """The ``[[files]]`` of a plaintext package's Enarx.toml, read by the host only to know
    which ports to forward (the Keep fetches and verifies the package itself); None for an
    encrypted package, whose Enarx.toml only the attested Keep can read."""
    from enarx import config
    from enarx.package import crypt
    from enarx.package.fetch import ClientOptions, open_source

    opts = ClientOptions(allow_insecure=allow_insecure, token=token,
                         ca_bundle=Path(ca_bundle) if ca_bundle else None,
                         default_host=registry)
    try:
        source = open_source(spec, opts)
    except EnarxError as e:
        return _unforwarded(warn, e)
    try:
        tree = source.resolve().tree
        if crypt.is_encrypted(tree):
            warn("kvm: the package is encrypted, so the host cannot see its listen entries: "
                 "none are forwarded into the VM Keep")
            return None
        entry = tree.files.get("Enarx.toml")
        if entry is None or entry.length > 1 << 20:
            return None
        text = b"".join(source.stream("Enarx.toml", entry)).decode("utf-8", "replace")
        return config.loads(text, path="Enarx.toml (in the package)").files
    except EnarxError as e:  # e.g. a private repository that serves contents to Keeps only
        return _unforwarded(warn, e)
    finally:
        source.close()


def _unforwarded(warn: Callable[[str], None], e: EnarxError) -> None:
    warn(f"kvm: the host cannot read the package's Enarx.toml ({e.message}): its listen "
         "entries are not forwarded; the Keep fetches and checks the package itself")


def inner_command(req: dict[str, Any], workdir: str) -> tuple[list[str], dict[str, str]]:
    """Inside the VM: the ``enarx deploy`` argv and the environment it adds (the token and
    the default registry), with the PEM files written to ``workdir``."""
    d = req.get("deploy")
    if not isinstance(d, dict) or not isinstance(d.get("spec"), str):
        raise ValueError("a deploy request needs deploy.spec")
    argv = [sys.executable, "-m", "enarx.cli.main", "deploy", "--backend", "nil",
            "--allow-insecure", "--no-cache"]  # the host checked --allow-insecure for kvm
    files = {}
    for key in _PEMS:
        if isinstance(d.get(key), str):
            path = os.path.join(workdir, f"{key}.pem")
            with open(path, "w", encoding="utf-8") as f:
                f.write(d[key])
            files[key] = path
    if d.get("steward"):
        argv += ["--steward", str(d["steward"])]
    flags = {"steward_ca": "--steward-ca", "signer": "--signer", "ca_bundle": "--ca-bundle"}
    for key, flag in flags.items():
        if key in files:
            argv += [flag, files[key]]
    if d.get("max_memory") is not None:
        argv += ["--max-memory", str(int(d["max_memory"]))]
    if d.get("timeout") is not None:
        argv += ["--timeout", repr(float(d["timeout"]))]
    if d.get("fuel") is not None:
        argv += ["--fuel", str(int(d["fuel"]))]
    env: dict[str, str] = {}
    if d.get("token"):
        env["ENARX_REGISTRY_TOKEN"] = str(d["token"])
    if d.get("registry"):
        env["ENARX_REGISTRY"] = str(d["registry"])
    return [*argv, "--", d["spec"]], env
