"""Attesting a VM Keep: the sim launch the host measures, and the steward the guest attests to.

A **sim VM Keep** (``enarx run --backend sim --vm``) is the SEV-SNP flow without hardware.
The host launcher plays the AMD PSP: it computes the SNP launch digest of exactly what it
boots (kernel, initramfs, command line, :data:`VCPUS` vCPUs of type
``enarx.vm.measure.DEFAULT_VCPU_TYPE``, measured with the generated sim firmware —
``enarx keep image measure --snp --sim`` prints the same value) and the workload identity
(what ``enarx identity`` prints), and hands the guest, in the request's ``sim`` key, that
MEASUREMENT, HOST_DATA = ``launch_binding(identity, 32)`` and the sim chip's signing material
(no CA keys). Inside, the agent installs them (:func:`prepare_inner`) and the inner run uses
the ``sim`` backend, whose reports then carry that launch.

With a steward (request key ``steward``: its URL and CA PEM), the inner run attests from inside
the VM: its one-time key is made there. A steward on the host's loopback is reached through
QEMU user networking (``vm/guestnet.py`` maps 127.0.0.1/localhost to the gateway and keeps
the name for the TLS check). A plain ``kvm`` Keep attests as ``nil`` (no evidence).

Host side: :func:`plan`, :meth:`SimPlan.request`, :func:`steward_request`. Guest side
(the agent; imports nothing the image lacks): :func:`steward_args`, :func:`prepare_inner`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enarx.config import Source

__all__ = ["STEWARD_CA", "VCPUS", "SimPlan", "plan", "prepare_inner", "run_identity",
           "steward_args", "steward_request"]

#: vCPUs of every VM Keep (``VmSpec.vcpus``' default): part of the measured launch.
VCPUS = 1
#: The steward CA's file name in the agent's work directory.
STEWARD_CA = "steward-ca.pem"
_SIM_DIR = "sim-state"


@dataclass(frozen=True)
class SimPlan:
    """The host's half of a sim VM Keep: the sim chip and the workload identity."""

    backend: Any  # enarx.platform.sim.SimBackend
    identity: str

    def request(self, kernel: str, initrd: str, append: str) -> dict[str, Any]:
        """The request's ``sim`` key for booting ``kernel``+``initrd`` with ``append``: the
        launch digest of exactly that, HOST_DATA bound to the workload, the chip material."""
        from enarx.vm.measure import DEFAULT_VCPU_TYPE, sim_launch_digest
        from enarx.workload import HOST_DATA_SIZE, launch_binding

        digest = sim_launch_digest(kernel=Path(kernel), initrd=Path(initrd), append=append,
                                   vcpus=VCPUS, vcpu_type=DEFAULT_VCPU_TYPE)
        return {"measurement": digest.hex(),
                "host_data": launch_binding(self.identity, HOST_DATA_SIZE).hex(),
                "workload": self.identity, "chip": self.backend.chip_material()}


def run_identity(wasm: bytes, source: Source | None, *, dirs: list[Any],
                 args: tuple[str, ...], env: list[tuple[str, str]], fd_env: bool) -> str:
    """The workload identity the VM Keep's inner run claims (what `enarx identity` prints):
    what a sim or confidential launch binds into HOST_DATA / MRCONFIGID. ``source``: the
    Enarx.toml the launcher parsed (None: none)."""
    from enarx.workload import identity_of

    return identity_of(wasm, source.config if source is not None else None, extra_dirs=dirs,
                       extra_args=args, extra_env=env, fd_env=fd_env)


def plan(backend: Any, wasm: bytes, source: Source | None, *, dirs: list[Any],
         args: tuple[str, ...], env: list[tuple[str, str]], fd_env: bool) -> SimPlan:
    """The sim plan of ``enarx run --backend sim --vm``: the identity the inner run claims."""
    return SimPlan(backend=backend, identity=run_identity(wasm, source, dirs=dirs,
                                                          args=args, env=env, fd_env=fd_env))


def steward_request(target: Any) -> dict[str, str]:
    """The request's ``steward`` key for a ``StewardTarget`` (keep/attest.py)."""
    return {"url": str(target.url), "ca": bytes(target.ca_pem).decode("ascii", "replace")}


def steward_args(steward: Any, workdir: str) -> list[str]:
    """``--steward``/``--steward-ca`` for the inner run (pure; the CA file is written by
    :func:`prepare_inner`)."""
    if not isinstance(steward, dict) or not steward.get("url"):
        return []
    return ["--steward", str(steward["url"]), "--steward-ca", os.path.join(workdir, STEWARD_CA)]


def prepare_inner(req: dict[str, Any], workdir: str) -> dict[str, str]:
    """In the VM: write the steward CA and install the sim chip and launch; the variables
    the inner run's environment needs (``ENARX_SIM_DIR``), empty when neither is asked."""
    steward = req.get("steward")
    if isinstance(steward, dict) and steward.get("url"):
        with open(os.path.join(workdir, STEWARD_CA), "w", encoding="ascii") as f:
            f.write(str(steward.get("ca", "")))
    sim = req.get("sim")
    if not isinstance(sim, dict):
        return {}
    from enarx.platform.sim import install_chip

    state = Path(workdir, _SIM_DIR)
    install_chip(state, sim.get("chip") or {}, measurement=bytes.fromhex(sim["measurement"]),
                 host_data=bytes.fromhex(sim["host_data"]))
    return {"ENARX_SIM_DIR": str(state)}
