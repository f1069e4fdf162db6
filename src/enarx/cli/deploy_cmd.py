"""``enarx deploy SPEC``: provision a package into a Keep that attests before it gets anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from enarx.errors import UsageError
from enarx.flags import DEFAULT_MAX_MEMORY, MAX_FUEL, MAX_TIMEOUT

__all__ = ["deploy"]


def _read(path: str, what: str, hint: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read: {e.strerror}", hint=hint) from None


@click.command()
@click.option("--backend", envvar="ENARX_BACKEND",
              help="sev-snp, tdx, sgx; nil, sim and kvm need --allow-insecure "
              "[env: ENARX_BACKEND].")
@click.option("--steward", envvar="ENARX_STEWARD", metavar="URL",
              help="The steward (https) the Keep attests to; it releases the package key and "
              "the secrets [env: ENARX_STEWARD].")
@click.option("--steward-ca", envvar="ENARX_STEWARD_CA", type=click.Path(dir_okay=False),
              metavar="PEM", help="The CA of the steward's TLS certificate (`enarx steward "
              "ca`) [env: ENARX_STEWARD_CA].")
@click.option("--signer", type=click.Path(dir_okay=False), metavar="PUB.pem",
              help="Require a valid signature by this public key (`enarx key create`).")
@click.option("--allow-insecure", is_flag=True,
              help="Allow a non-confidential backend (nil, sim, kvm) and plain http to a "
              "registry that is not on a loopback address.")
@click.option("--ca-bundle", envvar="ENARX_CA_BUNDLE", type=click.Path(dir_okay=False),
              metavar="PEM", help="CA certificates for the registry's TLS "
              "[env: ENARX_CA_BUNDLE].")
@click.option("--max-memory", metavar="SIZE", help="Cap linear memory (e.g. 64M).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True, max=MAX_TIMEOUT),
              metavar="SECONDS", help="Wall-clock limit of the workload (exit 124).")
@click.option("--fuel", type=click.IntRange(min=1, max=MAX_FUEL),
              help="Instruction budget (exit 124 when spent).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the compiled-module cache.")
@click.argument("spec")
def deploy(backend: str | None, steward: str | None, steward_ca: str | None,
           signer: str | None, allow_insecure: bool, ca_bundle: str | None,
           max_memory: str | None, timeout: float | None, fuel: int | None, no_cache: bool,
           spec: str) -> None:
    """Deploy the package SPEC into a Keep and run it.

    \b
    SPEC: [HOST/]USER/REPO:TAG (drawbridge), oci://HOST[:PORT]/NAME:TAG, file://DIR.
    Inside the Keep: resolve the package, attest to the steward for the package's identity,
    receive its key and secrets (JWE to a one-time key), fetch, decrypt and check every
    digest, then run main.wasm with the package's Enarx.toml. The host sees ciphertext only.
    With --backend kvm all of this happens inside one VM Keep (docs/vm-keeps.md).
    \b
    Examples:
      enarx deploy --steward https://steward:3000 --steward-ca ca.pem registry.example/me/app:1.0.0
      enarx deploy --signer me.pub.pem --steward … oci://registry.example/me/app:1.0.0
      enarx deploy --backend sim --allow-insecure file://./app
      enarx deploy --backend kvm --allow-insecure http://127.0.0.1:8080/me/app:1.0.0
    """
    from enarx import platform
    from enarx.cli.output import warn
    from enarx.flags import parse_size
    from enarx.keep.deploy import DeployRequest, check_backend, prepare, run_prepared
    from enarx.runtime.cache import ModuleCache

    target = None
    if steward:
        from enarx.keep.attest import StewardTarget

        if not steward_ca:
            raise UsageError(f"steward {steward} needs the CA that signs its TLS certificate",
                             hint="pass --steward-ca PEM; `enarx steward ca` prints it")
        target = StewardTarget(url=steward, ca_pem=_read(steward_ca, "steward CA",
                                                         "give the PEM `enarx steward ca` prints"))
    if signer is not None and not Path(signer).is_file():
        raise UsageError(f"--signer {signer}: no such file",
                         hint="give the public key `enarx key create` wrote (KEY.pub.pem)")
    try:
        memory = parse_size(max_memory) if max_memory is not None else None
    except ValueError as e:
        raise UsageError(f"--max-memory: {e}") from None
    if memory is not None and memory > DEFAULT_MAX_MEMORY:
        raise UsageError("--max-memory above 4G is meaningless for wasm32", hint="use 4G or less")
    from enarx.package.spec import check_transport, parse_spec

    registry = os.environ.get("ENARX_REGISTRY")
    parsed = check_transport(parse_spec(spec, default_host=registry),
                             allow_insecure=allow_insecure)
    token = None
    if parsed.kind in ("drawbridge", "oci") and parsed.host:
        from enarx.package.credentials import registry_token

        token = registry_token(parsed.host)
    chosen = platform.select(backend)
    check_backend(chosen, allow_insecure)  # before anything is fetched or printed
    if chosen.warning:
        warn(chosen.warning)
    if chosen.vm_mode() in ("snp", "tdx"):  # an SNP/TDX host (vm/hostlaunch.py): run only
        raise UsageError(f"`enarx deploy --backend {chosen.name}` on this host (it would "
                         "launch a confidential VM) is not supported yet: only `enarx run` "
                         "launches confidential VM Keeps",
                         hint=f"fetch the package (`enarx package fetch SPEC --out DIR`) and "
                         f"`enarx run --backend {chosen.name} DIR/main.wasm`, or deploy from "
                         "inside a confidential VM")
    if chosen.name == "kvm":  # the whole deploy runs inside one VM Keep (vm/vmdeploy.py)
        from enarx.vm.vmdeploy import deploy_in_vm

        code = deploy_in_vm(spec, warn=warn, steward=steward, steward_ca=steward_ca,
                            signer=signer, ca_bundle=ca_bundle, token=token,
                            registry=registry, allow_insecure=allow_insecure,
                            max_memory=memory, timeout=timeout, fuel=fuel)
        sys.exit(code & 0xFF if code >= 0 else 1)
    if target is None:
        warn("no --steward: nothing attests this Keep, and an encrypted package or "
             "[[secrets]] cannot be deployed")
    req = DeployRequest(spec=spec, backend=backend, steward=target,
                        signer=Path(signer) if signer else None, allow_insecure=allow_insecure,
                        default_host=registry,
                        ca_bundle=Path(ca_bundle) if ca_bundle else None, token=token)
    sys.stdout.flush()
    # The user's cache: plaintext packages use it on non-confidential backends only; an
    # encrypted package's compiled module goes sealed under a key only the Keep holds.
    from enarx.cli.package_cmd import progress_factory

    with progress_factory("fetched", spec) as start:  # a bar on a terminal, else one line
        ready = prepare(req, chosen, progress=start)
    code = run_prepared(ready, chosen, max_memory=memory, timeout=timeout, fuel=fuel,
                        cache=None if no_cache else ModuleCache.open(warn=warn))
    sys.exit(code & 0xFF if code >= 0 else 1)
