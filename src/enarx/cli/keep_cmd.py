"""``enarx keep image build|measure``: the reproducible VM Keep image and its launch digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from enarx.cli.output import error_exit, print_json
from enarx.errors import EnarxError

__all__ = ["keep"]


@click.group()
def keep() -> None:
    """Build and measure the image VM Keeps boot (see docs/vm-keeps.md)."""


@keep.group()
def image() -> None:
    """The Keep image: a pinned kernel plus a reproducible initramfs."""


def _image_lines(data: dict[str, Any], directory: Path) -> None:
    click.echo(f"image     {directory}")
    click.echo(f"key       {data['key']}")
    for label, part in (("kernel", "kernel"), ("initramfs", "initrd")):
        f = data[part]
        click.echo(f"{label:<9} {f['file']}  {f['size']} bytes ({f['size'] / 2**20:.1f} MiB)")
        click.echo(f"          sha256 {f['sha256']}")
        click.echo(f"          sha384 {f['sha384']}")
    click.echo(f"append    {data['append']}")


@image.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Also write vmlinuz, initramfs.img and manifest.json to this directory.")
@click.option("--force", is_flag=True, help="Rebuild even if the cache holds this image.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def build(out: Path | None, force: bool, as_json: bool) -> None:
    """Build the Keep image from pinned inputs (cached; rebuilt only when inputs change)."""
    from enarx.vm.image import build_image

    try:
        img = build_image(out=out, force=force)
    except EnarxError as e:
        error_exit(e, as_json=as_json)
        return
    data = img.to_dict() | {"directory": str(img.directory), "cached": img.cached}
    if as_json:
        print_json(data)
    else:
        _image_lines(data, img.directory)
        click.echo("(from cache)" if img.cached else "(built)")


@image.command()
@click.option("--snp", is_flag=True, help="Compute the SEV-SNP launch digest.")
@click.option("--tdx", is_flag=True, help="TDX MRTD/RTMRs (reports what is missing).")
@click.option("--ovmf", type=click.Path(dir_okay=False, path_type=Path),
              help="OVMF built with SNP kernel-hashes support (OVMF.amdsev.fd).")
@click.option("--sim", is_flag=True,
              help="Measure with the generated sim firmware instead of --ovmf: the digest a "
              "sim VM Keep (`enarx run --backend sim --vm`) reports. NOT confidential.")
@click.option("--vcpus", type=int, default=1, show_default=True, help="vCPUs the Keep boots with.")
@click.option("--vcpu-type", default="EPYC-v4", show_default=True, help="QEMU -cpu model.")
@click.option("--append", "append", default=None,
              help="Kernel command line (default: the image's).")
@click.option("--image", "image_dir", type=click.Path(file_okay=False, path_type=Path),
              help="A directory written by `build --out` (default: build or reuse the cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the digest and inputs as JSON.")
def measure(snp: bool, tdx: bool, ovmf: Path | None, sim: bool, vcpus: int, vcpu_type: str,
            append: str | None, image_dir: Path | None, as_json: bool) -> None:
    """Print the launch digest of the Keep image, for the steward policy's [snp] hash.

    \b
    With --ovmf: what SEV-SNP hardware reports when it launches the image with that firmware.
    With --sim: what a sim VM Keep reports (no hardware; see docs/vm-keeps.md).
    --vcpus, --vcpu-type and --append must match the launch, or the digest differs.
    \b
    Examples:
      enarx keep image measure --snp --ovmf OVMF.amdsev.fd --vcpus 1
      enarx keep image measure --snp --sim --json
    """
    from enarx.vm.measure import (
        TDX_UNSUPPORTED,
        MeasureError,
        sim_launch_digest,
        snp_launch_digest,
    )
    from enarx.vm.simfw import SIM_FIRMWARE_ID

    try:
        if snp == tdx:
            raise MeasureError("choose exactly one of --snp and --tdx")
        if tdx:
            raise MeasureError(TDX_UNSUPPORTED)
        if sim and ovmf is not None:
            raise MeasureError("choose one of --ovmf and --sim",
                               hint="--ovmf for hardware launches, --sim for sim VM Keeps")
        if ovmf is None and not sim:
            raise MeasureError("--snp needs --ovmf PATH (an OVMF with SNP kernel-hashes "
                               "support) or --sim",
                               hint="--sim gives the digest of a sim VM Keep (no hardware)")
        from enarx.vm.image import build_image, load_image

        img = load_image(image_dir) if image_dir is not None else build_image()
        cmdline = img.append if append is None else append
        if ovmf is not None:
            digest = snp_launch_digest(kernel=img.kernel.path, initrd=img.initrd.path,
                                       append=cmdline, ovmf=ovmf, vcpus=vcpus,
                                       vcpu_type=vcpu_type)
        else:
            digest = sim_launch_digest(kernel=img.kernel.path, initrd=img.initrd.path,
                                       append=cmdline, vcpus=vcpus, vcpu_type=vcpu_type)
    except EnarxError as e:
        error_exit(e, as_json=as_json)
        return
    if as_json:
        print_json({"snp": {"launch_digest": digest.hex(), "vcpus": vcpus,
                            "vcpu_type": vcpu_type, "append": cmdline,
                            "ovmf": str(ovmf) if ovmf is not None else None,
                            "firmware": SIM_FIRMWARE_ID if sim else "ovmf",
                            "image_key": img.key, "kernel_sha256": img.kernel.sha256,
                            "initrd_sha256": img.initrd.sha256}})
    else:
        click.echo(f"snp launch digest: {digest.hex()}" + (" (sim)" if sim else ""))
        click.echo("steward policy:")
        if sim:
            click.echo('  allow = ["sim"]')
            click.echo('  trust_roots = ["sim-ark.pem"]  # a copy of the sim ARK: '
                       '$ENARX_SIM_DIR/ark.pem')
        click.echo("  [snp]")
        click.echo(f'  hash = ["{digest.hex()}"]')
