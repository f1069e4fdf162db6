"""``enarx attest``: produce evidence on this host, verify evidence from anywhere.

Files are read here, at the edge, and only bytes go down to ``enarx.attestation``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from enarx.errors import EnarxError, UsageError

__all__ = ["attest", "report", "verify"]

_CONFIDENTIAL = ("sev-snp", "tdx", "sgx")  # backend names, in default order

#: ``--platform`` of both ``attest verify`` and ``attest report`` uses the evidence names
#: (``snp``, ``sgx``, ``tdx``, as in results and hints); the backend name ``sev-snp`` is an
#: alias of ``snp``. ``report`` also takes ``sim``.
PLATFORM_ALIASES = {"sev-snp": "snp"}
_BACKEND_OF = {"snp": "sev-snp", "sgx": "sgx", "tdx": "tdx", "sim": "sim"}


class _PlatformChoice(click.Choice):  # type: ignore[type-arg]
    """A choice of canonical names that also accepts each alias (mapped to its name)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            value = PLATFORM_ALIASES.get(value.lower(), value)
        return super().convert(value, param, ctx)


def _read(path: str, what: str, hint: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file", hint=hint) from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path}: is a directory, expected a file", hint=hint) from None
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read: {e.strerror}", hint=hint) from None


def _read_collateral(directory: str) -> dict[str, bytes]:
    from enarx.attestation.dcap.collateral import FILES, OPTIONAL

    root = Path(directory)
    if not root.is_dir():
        raise UsageError(
            f"--collateral {directory}: not a directory",
            hint="pass a directory holding " + ", ".join(FILES.values()),
        )
    files: dict[str, bytes] = {}
    for role, name in FILES.items():
        p = root / name
        if role in OPTIONAL and not p.exists():
            continue
        files[name] = _read(str(p), "collateral file", "`enarx platform sgx cache QUOTE --out "
                            "DIR` writes every file this needs")
    return files


def _parse_at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--at {value!r} is not an ISO 8601 time",
                         hint="e.g. --at 2025-07-19T10:00:00Z") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _check_kind(blob: bytes, platform_: str, evidence: str) -> None:
    """Refuse evidence of another kind up front, naming the right --platform (exit 2)."""
    from enarx.attestation.kind import DESCRIPTIONS, detect

    found = detect(blob)
    if found is not None and found != platform_:
        raise UsageError(f"{evidence} is {DESCRIPTIONS[found]}, not {DESCRIPTIONS[platform_]}",
                         hint=f"use --platform {found}")


def _fail(err: EnarxError, as_json: bool) -> None:
    from enarx.cli.output import error_exit

    error_exit(err, as_json=as_json)


def _atomic_write(path: Path, data: bytes) -> None:
    from enarx.fsutil import atomic_write

    atomic_write(path.resolve(), data)


@click.group()
def attest() -> None:
    """Produce and verify attestation evidence (SEV-SNP, SGX, TDX)."""


_VERIFY_HELP = """Verify EVIDENCE (an SNP report or an SGX/TDX DCAP quote).

Exits 0 only when the evidence is authentic and a TCB level matched (and, with --policy, the
policy accepts it); otherwise prints the failed check(s) and exits non-zero (4 for
attestation or policy failures, 2 for bad arguments or a malformed policy file).

\b
SEV-SNP:  --cert VCEK_OR_VLEK [--chain ASK_ARK.pem] [--trust-root ARK.pem] [--crl CRL]
SGX/TDX:  --collateral DIR  (tcb_info.json, tcb_info_issuer_chain.pem, qe_identity.json,
          qe_identity_issuer_chain.pem, pck_crl.der, root_ca_crl.der
          [, pck_crl_issuer_chain.pem]) [--trust-root ROOT.pem]
--at TIME checks every certificate and collateral item as of TIME (ISO 8601).
--policy FILE appraises the verified evidence (TOML, or JSON if FILE ends in .json).
--platform sev-snp is accepted as another spelling of snp.
"""


@attest.command("verify", help=_VERIFY_HELP)
@click.argument("evidence", type=click.Path(dir_okay=False))
@click.option("--platform", "platform_", required=True,
              type=_PlatformChoice(["snp", "sgx", "tdx"], case_sensitive=False),
              help="Kind of evidence (sev-snp: same as snp).")
@click.option("--cert", "cert", type=click.Path(), help="SNP: VCEK or VLEK (PEM or DER).")
@click.option("--chain", "chain", type=click.Path(), help="SNP: ASK/ASVK + ARK (PEM).")
@click.option("--collateral", type=click.Path(), help="SGX/TDX: directory of Intel collateral.")
@click.option("--at", "at", help="Verify as of this time (ISO 8601), default now.")
@click.option("--trust-root", "trust_root", type=click.Path(),
              help="Trust this root (PEM) instead of / besides the shipped vendor roots.")
@click.option("--crl", "crls", multiple=True, type=click.Path(), help="SNP: CRL (repeatable).")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False),
              help="Appraise against this policy file (TOML or .json); see docs/attestation.md.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(evidence: str, platform_: str, cert: str | None, chain: str | None,
           collateral: str | None, at: str | None, trust_root: str | None,
           crls: tuple[str, ...], policy_file: str | None, as_json: bool) -> None:
    from enarx.errors import PolicyViolation

    try:
        policy = _load_policy(policy_file) if policy_file else None
        result = _verify(evidence, platform_, cert, chain, collateral, at, trust_root, crls)
        if trust_root:
            _warn_test_root(trust_root)
        if policy is not None:
            from enarx.attestation.policy import appraise

            appraise(result, policy)
    except PolicyViolation as e:
        _fail_policy(e, policy_file or "", as_json)
        return
    except EnarxError as e:
        _fail(e, as_json)
        return
    if as_json:
        from enarx.cli.output import print_json

        out = result.to_dict()
        if policy_file:
            out["policy"] = {"file": policy_file, "accepted": True}
        print_json(out)
        return
    _render(result, policy_file)


def _load_policy(path: str) -> Any:
    from enarx.attestation.policy import Policy

    raw = _read(path, "--policy", "pass a policy file (TOML, or JSON ending in .json)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--policy {path}: not UTF-8 text",
                         hint="a policy is a TOML (or .json) text file") from None
    fmt = "json" if path.lower().endswith(".json") else "toml"
    return Policy.loads(text, fmt=fmt, source=path)


def _fail_policy(err: Any, path: str, as_json: bool) -> None:
    """Every failed rule, one per line (the JSON form lists them under ``violations``)."""
    import sys

    if as_json:
        _fail(err, as_json)
        return
    click.echo(click.style("error: ", fg="red", bold=True)
               + f"the evidence is authentic, but policy {path} rejects it:", err=True)
    for v in err.violations:
        click.echo(f"  {v.message}", err=True)
    click.echo(click.style("hint: ", fg="cyan") + "change the workload or platform, or accept "
               "this in the policy if you really do", err=True)
    sys.exit(err.exit_code)


def _warn_test_root(path: str) -> None:
    """A root the user supplied is a test root unless it is a shipped vendor root: say so."""
    from enarx.attestation.roots import is_vendor_root
    from enarx.cli.output import warn

    if not is_vendor_root(_read(path, "--trust-root", "pass a PEM certificate")):
        warn(f"verified against --trust-root {path}, which is not an AMD/Intel root: "
             "this proves nothing about real hardware")


def _verify(evidence: str, platform_: str, cert: str | None, chain: str | None,
            collateral: str | None, at: str | None, trust_root: str | None,
            crls: tuple[str, ...]) -> Any:
    when = _parse_at(at)
    blob = _read(evidence, "evidence", "pass the report/quote file as EVIDENCE")
    root = _read(trust_root, "--trust-root", "pass a PEM certificate") if trust_root else None
    _check_kind(blob, platform_, evidence)
    if platform_ == "snp":
        if collateral:
            raise UsageError("--collateral is for sgx/tdx quotes",
                             hint="for SNP use --cert (and --chain)")
        from enarx.attestation.snp import verify_report

        return verify_report(
            blob,
            cert=_read(cert, "--cert", "download the VCEK for this chip/TCB") if cert else None,
            chain=(_read(chain, "--chain", "the KDS cert_chain (ASK+ARK) in PEM"),)
            if chain else (),
            trust_roots=(root,) if root else (),
            crls=tuple(_read(c, "--crl", "pass a CRL file (DER or PEM)") for c in crls),
            at=when,
        )
    if cert or chain or crls:
        raise UsageError("--cert/--chain/--crl are for SNP reports",
                         hint="SGX/TDX quotes carry their PCK chain; CRLs go in --collateral")
    if not collateral:
        raise UsageError(f"--platform {platform_} needs --collateral DIR",
                         hint="see `enarx attest verify --help` for the file names")
    from enarx.attestation.dcap import Collateral, verify_quote
    from enarx.attestation.result import Platform

    result = verify_quote(blob, Collateral.from_files(_read_collateral(collateral)),
                          at=when, trust_root=root)
    if result.platform != Platform(platform_):
        from enarx.errors import MalformedEvidence

        raise MalformedEvidence("dcap.quote.platform", "the quote is for another platform",
                                expected=platform_, actual=result.platform.value,
                                hint=f"use --platform {result.platform.value}")
    return result


def _render(result: Any, policy_file: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    d = result.to_dict()
    table = Table(title=f"[green]verified[/] {d['platform']} evidence ({d['product']})",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        ("version", str(d["version"])),
        ("measurement", d["measurement"]),
        ("signer", d["signer"] or "-"),
        ("report_data", d["report_data"]),
        ("tcb_status", d["tcb_status"]),
        ("advisory_ids", ", ".join(d["advisory_ids"]) or "-"),
        ("debug", "[red]yes[/]" if d["debug"] else "no"),
    ]
    rows += [(f"rtmr{i}", v) for i, v in enumerate(d["rtmrs"])]
    rows += [("chain", c["subject"]) for c in d["chain"]]
    if policy_file:
        rows.append(("policy", f"[green]accepted[/] ({policy_file})"))
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


_REPORT_HELP = """Produce evidence on this host binding --report-data (hex, up to 64 bytes; zero-padded).

Without --platform the first available confidential backend (snp, tdx, sgx) is used;
--platform takes the names `attest verify` does (sev-snp: same as snp) or sim.
With --out FILE the raw report/quote goes to FILE; certificates the platform handed out go
next to it as FILE.vcek.pem (leaf) and FILE.chain.pem (intermediates and root).

\b
The simulator (not confidential, for trying the flow anywhere):
  enarx attest report --platform sim --out r.bin
  enarx attest verify r.bin --platform snp --cert r.bin.vcek.pem \\
      --chain r.bin.chain.pem --trust-root r.bin.ark.pem
(FILE.ark.pem is the simulator's own root; a real verifier must never trust it.)
"""


@attest.command("report", help=_REPORT_HELP,
                short_help="Produce evidence on this host (SEV-SNP, TDX, SGX or the simulator).")
@click.option("--platform", "platform_",
              type=_PlatformChoice(["sim", "snp", "tdx", "sgx"], case_sensitive=False),
              help="Backend to ask (default: first available confidential one; "
              "sev-snp: same as snp).")
@click.option("--report-data", "report_data", default="",
              help="Hex, up to 64 bytes (e.g. a nonce or key hash).")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write evidence here.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report(platform_: str | None, report_data: str, out: str | None, as_json: bool) -> None:
    try:
        _report(platform_, report_data, out, as_json)
    except EnarxError as e:
        _fail(e, as_json)


def _pem(der: bytes) -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def _report_data(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value.strip().removeprefix("0x"))
    except ValueError:
        raise UsageError(f"--report-data {value!r} is not hex", hint="e.g. --report-data "
                         "00112233") from None
    if len(raw) > 64:
        raise UsageError("--report-data is longer than 64 bytes", hint="pass a digest instead")
    return raw.ljust(64, b"\0")


def _backend(name: str | None) -> Any:
    from enarx import platform as plat
    from enarx.errors import BackendUnavailable

    if name:
        return plat.select(_BACKEND_OF.get(name, name))
    for candidate in _CONFIDENTIAL:
        try:
            backend = plat.get(candidate)
        except BackendUnavailable:
            continue
        if backend.available():
            return backend
    raise BackendUnavailable(
        "no confidential backend (sev-snp, tdx, sgx) is available on this host",
        hint="use `--platform sim` for simulated evidence; `enarx platform info` shows why",
    )


def _report(platform_: str | None, report_data: str, out: str | None, as_json: bool) -> None:
    from enarx.cli.output import print_json, warn

    data = _report_data(report_data)
    backend = _backend(platform_)
    if backend.warning:
        warn(backend.warning)
    ev = backend.evidence(data)
    certs = [_pem(c) for c in ev.certs]
    root = backend.ark_pem() if hasattr(backend, "ark_pem") else None
    written: list[str] = []
    if out:
        target = Path(out)
        files = {target: ev.blob}
        if certs:
            files[Path(f"{out}.vcek.pem")] = certs[0]
            files[Path(f"{out}.chain.pem")] = b"".join(certs[1:])
        if root:
            files[Path(f"{out}.ark.pem")] = root
        try:
            for path, content in files.items():
                _atomic_write(path, content)
                written.append(str(path))
        except OSError as e:
            raise UsageError(f"--out {out}: cannot write: {e.strerror}",
                             hint="check that the directory exists and is writable") from None
    if as_json:
        print_json({
            "platform": {v: k for k, v in _BACKEND_OF.items()}.get(backend.name, backend.name),
            "backend": backend.name,
            "kind": ev.kind,
            "provider": ev.provider,
            "report_data": data.hex(),
            "evidence": ev.blob.hex(),
            "certs": [c.decode() for c in certs],
            "trust_root": root.decode() if root else None,
            "files": written,
        })
        return
    if written:
        click.echo(f"{ev.kind} from {backend.name}: wrote " + ", ".join(written))
        return
    click.echo(ev.blob.hex())
    for c in certs:
        click.echo(c.decode(), nl=False)
