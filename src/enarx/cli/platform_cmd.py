"""``enarx platform``: what this host can run, with a fix hint for every failed check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["info", "platform", "sgx", "sgx_cache", "snp", "snp_vcek"]


@click.group()
def platform() -> None:
    """Inspect this host's Keep backends."""


@platform.command("info")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(as_json: bool) -> None:
    """List every backend with its checks (pass/fail and how to fix)."""
    from dataclasses import asdict

    from enarx import platform as plat
    from enarx.cli.output import print_json
    from enarx.errors import EnarxError
    from enarx.platform.base import Check

    rows: list[dict[str, Any]] = []
    for name in plat.BACKENDS:
        facts: dict[str, Any] = {}
        try:
            backend = plat.get(name)
            checks, facts = backend.info()
            confidential = backend.confidential
        except EnarxError as e:
            checks = [Check("backend module", False, e.message, "this build lacks the backend")]
            confidential = False
        rows.append(
            {
                "backend": name,
                "available": all(c.passed for c in checks),
                "confidential": confidential,
                "checks": [asdict(c) for c in checks],
                **({"details": facts} if facts else {}),
            }
        )
    default = plat.select(None).name
    if as_json:
        print_json({"default": default, "backends": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Keep backends (default: {default})")
    for col in ("backend", "check", "result", "detail / fix"):
        table.add_column(col)
    for row in rows:
        for i, c in enumerate(row["checks"]):
            mark = "[green]pass[/]" if c["passed"] else "[red]fail[/]"
            detail = c["detail"] if c["passed"] else f"{c['detail']} [cyan]→ {c['hint']}[/]"
            table.add_row(row["backend"] if i == 0 else "", c["name"], mark, detail)
        table.add_section()
    Console().print(table)


def _fetcher(cache_dir: str | None, refresh: bool):  # type: ignore[no-untyped-def]
    from enarx.platform.collateral import Fetcher

    return Fetcher(Path(cache_dir) if cache_dir else None, refresh=refresh)


_cache_options = [
    click.option("--cache-dir", type=click.Path(file_okay=False),
                 help="Collateral cache [default: ~/.cache/enarx/collateral, "
                 "env ENARX_COLLATERAL_CACHE]."),
    click.option("--refresh", is_flag=True, help="Ignore cached entries and fetch again."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
]


def _with_cache_options(f: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_cache_options):
        f = option(f)
    return f


@platform.group("snp")
def snp() -> None:
    """AMD SEV-SNP helpers."""


@snp.command("vcek", short_help="Fetch the VCEK for an SNP report from AMD KDS (cached).")
@click.argument("report", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the VCEK (PEM) here [default: print it].")
@click.option("--chain-out", type=click.Path(dir_okay=False),
              help="Write the ASK+ARK bundle (PEM) here.")
@click.option("--product", help="Milan, Genoa or Turin (needed for v2 reports only).")
@click.option("--kds-url", default=None, help="AMD KDS or a caching proxy [default: AMD KDS].")
@_with_cache_options
def snp_vcek(report: str, out: str | None, chain_out: str | None, product: str | None,
             kds_url: str | None, cache_dir: str | None, refresh: bool, as_json: bool) -> None:
    """Fetch the VCEK matching REPORT's chip and REPORTED_TCB from AMD KDS (cached).

    The certificate is verified against the report and AMD's shipped roots before it is
    written or cached. Then: enarx attest verify REPORT --platform snp --cert OUT
    """
    from enarx.attestation.snp.certs import to_pem
    from enarx.cli.output import error_exit, print_json
    from enarx.errors import EnarxError
    from enarx.platform.collateral import KDS_URL, fetch_vcek

    fetcher = _fetcher(cache_dir, refresh)
    try:
        data = _read_input(report, "report")
        _refuse_kind(data, report, {"sgx", "tdx"},
                     "fetch a quote's collateral with `enarx platform sgx cache QUOTE --out DIR`")
        got = fetch_vcek(data, fetcher, kds_url=kds_url or KDS_URL, product=product)
    except EnarxError as e:
        error_exit(e, as_json=as_json)
        return
    pem = to_pem(got.vcek_der)
    try:
        if out:
            _write(Path(out), pem, "--out")
        if chain_out:
            _write(Path(chain_out), got.chain_pem, "--chain-out")
    except EnarxError as e:
        error_exit(e, as_json=as_json)
        return
    if as_json:
        print_json({"product": got.product, "url": got.vcek_url, "out": out,
                    "chain_out": chain_out, "downloads": fetcher.requests})
    elif not out:
        click.echo(pem.decode(), nl=False)
    else:
        click.echo(f"wrote {out} (VCEK for {got.product}, {fetcher.requests} download(s))")


@platform.group("sgx")
def sgx() -> None:
    """Intel SGX/TDX DCAP helpers."""


@sgx.command("cache",
             short_help="Fetch the DCAP collateral for an SGX/TDX quote (cached).")
@click.argument("quote", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the collateral files into (created if missing).")
@click.option("--pcs-url", default=None, help="Intel PCS or a PCCS (v4 API) [default: Intel PCS].")
@click.option("--root-crl-url", default=None, help="Where to get the Intel Root CA CRL.")
@_with_cache_options
def sgx_cache(quote: str, out_dir: str, pcs_url: str | None, root_crl_url: str | None,
              cache_dir: str | None, refresh: bool, as_json: bool) -> None:
    """Fetch the collateral for an SGX or TDX QUOTE into OUT (the --collateral layout).

    Then: enarx attest verify QUOTE --platform sgx|tdx --collateral OUT
    """
    from enarx.cli.output import error_exit, print_json
    from enarx.errors import EnarxError, UsageError
    from enarx.platform.collateral import PCS_URL, fetch_dcap_collateral

    fetcher = _fetcher(cache_dir, refresh)
    try:
        data = _read_input(quote, "quote")
        _refuse_kind(data, quote, {"snp"},
                     "fetch a report's VCEK with `enarx platform snp vcek REPORT --out vcek.pem`")
        files = fetch_dcap_collateral(data, fetcher, pcs_url=pcs_url or PCS_URL,
                                      root_crl_url=root_crl_url)
    except EnarxError as e:
        error_exit(e, as_json=as_json)
        return
    target = Path(out_dir)
    try:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {out_dir}: cannot create: {e.strerror}",
                             hint="pass a directory you can write to") from None
        for name, content in files.items():
            _write(target / name, content, "--out")
    except EnarxError as e:
        error_exit(e, as_json=as_json)
        return
    if as_json:
        print_json({"out": out_dir, "files": sorted(files), "downloads": fetcher.requests})
    else:
        click.echo(f"wrote {len(files)} files to {out_dir} ({fetcher.requests} download(s))")


def _read_input(path: str, what: str) -> bytes:
    from enarx.errors import UsageError

    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {path}: {e.strerror}") from None


def _refuse_kind(data: bytes, path: str, wrong: set[str], hint: str) -> None:
    from enarx.attestation.kind import DESCRIPTIONS, detect
    from enarx.errors import UsageError

    found = detect(data)
    if found in wrong:
        raise UsageError(f"{path} is {DESCRIPTIONS[found]}", hint=hint)


def _write(path: Path, data: bytes, flag: str) -> None:
    from enarx.errors import UsageError
    from enarx.fsutil import atomic_write

    try:
        atomic_write(path, data)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write: {e.strerror}",
                         hint="check that the directory exists and is writable") from None
