"""Fixtures shared by the VM Keep tests: one image per session, TCG (no KVM probe per test)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def vm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for the enarx CLI: the session's image cache, TCG (this host's /dev/kvm
    never reaches init, and a KVM probe boot per test would double the cost)."""
    from enarx.vm.image import build_image

    cache = tmp_path_factory.mktemp("vm-images")
    build_image(cache=cache)
    return {"ENARX_VM_IMAGE_CACHE": str(cache), "ENARX_VM_ACCEL": "tcg",
            "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("xdg-cache"))}
