"""The real CNCF distribution registry (Debian ``docker-registry``, 2.8) on 127.0.0.1.

:class:`DockerRegistry` writes a temporary config (filesystem storage under the test's tmp
dir, deletes enabled, port 0, optionally TLS with a given certificate and key), starts ``docker-registry serve``, reads the port it logs, and
stops it. Tests skip when the binary is absent (scripts/install-toolchains.sh installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

BINARY = "docker-registry"
_LISTEN = re.compile(r'msg="listening on 127\.0\.0\.1:(\d+)')


class DockerRegistry:
    def __init__(self, root: Path, *, tls: tuple[Path, Path] | None = None) -> None:
        exe = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if os.path.exists(
            f"/usr/bin/{BINARY}") else None)
        if exe is None:
            pytest.skip("docker-registry is not installed (scripts/install-toolchains.sh)")
        self.root = root
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        config = root / "config.yml"
        tls_conf = (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "")
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            "http:\n  addr: 127.0.0.1:0\n  secret: enarx-tests\n" + tls_conf)
        self.log: list[str] = []
        self.proc = subprocess.Popen([exe, "serve", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self._port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or self._port is None:
            self.stop()
            pytest.fail("docker-registry did not start:\n" + "".join(self.log))
        self.host = f"127.0.0.1:{self._port}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            m = _LISTEN.search(line)
            if m and self._port is None:
                self._port = int(m.group(1))
                self._ready.set()
        self._ready.set()

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (its filesystem driver's layout)."""
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def files(self) -> list[Path]:
        return [p for p in self.storage.rglob("*") if p.is_file()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
