"""Helpers for tests that need a registry: ``RegistryServer`` runs the real ``enarx registry
serve`` as a subprocess on 127.0.0.1 (a free port) and stops it; ``Pkg`` builds a drawbridge
tree (entries, canonical directory JSON) in memory and publishes it over HTTP in upstream's
order (tag, root directory, entries top-down)."""

from __future__ import annotations

import base64
import hashlib
import json
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.cliutil import ENARX
from tests.servers import ServerProcess, clean_env

__all__ = ["DIR_TYPE", "ENTRY_TYPE", "Pkg", "RegistryServer", "content_digest", "entry_of",
           "register"]

DIR_TYPE = "application/vnd.drawbridge.directory.v1+json"
ENTRY_TYPE = "application/vnd.drawbridge.entry.v1+json"
API = "/api/v0.1.0"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def content_digest(body: bytes) -> str:
    return ", ".join(f"{alg}=:{_b64(hashlib.new(alg.replace('-', ''), body).digest())}:"
                     for alg in ("sha-256", "sha-384"))


def entry_of(body: bytes, mtype: str) -> dict[str, Any]:
    return {"digest": {"sha-256": _b64(hashlib.sha256(body).digest()),
                       "sha-384": _b64(hashlib.sha384(body).digest())},
            "length": len(body), "type": mtype}


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Pkg:
    """A package tree: ``files`` maps a path ("a/b.txt") to (bytes, media type)."""

    files: dict[str, tuple[bytes, str]]
    nodes: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nodes = {}
        self._dir("")

    def _dir(self, prefix: str) -> dict[str, Any]:
        listing: dict[str, Any] = {}
        names = {p[len(prefix):].split("/", 1)[0] for p in self.files if p.startswith(prefix)}
        for name in sorted(names):
            path = prefix + name
            if path in self.files:
                body, mtype = self.files[path]
                self.nodes[path] = (body, mtype)
                listing[name] = entry_of(body, mtype)
            else:
                listing[name] = self._dir(path + "/")
        body = canonical(listing)
        self.nodes[prefix.rstrip("/")] = (body, DIR_TYPE)
        return entry_of(body, DIR_TYPE)

    @property
    def root(self) -> dict[str, Any]:
        body, _ = self.nodes[""]
        return entry_of(body, DIR_TYPE)

    @property
    def identity(self) -> str:
        return "sha384:" + hashlib.sha384(self.nodes[""][0]).hexdigest()

    def tag_body(self) -> bytes:
        return canonical(self.root)

    def order(self) -> list[str]:
        """Upload order: root first, then parents before children."""
        return sorted(self.nodes, key=lambda p: (p.count("/") + (p != ""), p))

    def publish(self, client: httpx.Client, user: str, repo: str, tag: str,
                *, skip: set[str] | None = None) -> list[int]:
        base = f"{API}/{user}/{repo}/_tag/{tag}"
        body = self.tag_body()
        codes = [client.put(base, content=body, headers={
            "content-type": ENTRY_TYPE, "content-digest": content_digest(body)}).status_code]
        for path in self.order():
            if skip and path in skip:
                continue
            data, mtype = self.nodes[path]
            r = client.put(f"{base}/tree/{path}", content=data, headers={
                "content-type": mtype, "content-digest": content_digest(data)})
            codes.append(r.status_code)
        return codes


def register(client: httpx.Client, user: str, repo: str, *, public: bool = True,
             workloads: list[str] | None = None) -> None:
    r = client.put(f"{API}/{user}", json={"subject": user})
    assert r.status_code in (201, 409), r.text
    record: dict[str, Any] = {"public": public}
    if workloads is not None:
        record["workloads"] = workloads
    r = client.put(f"{API}/{user}/{repo}", json=record)
    assert r.status_code == 201, r.text


class RegistryServer(ServerProcess):
    """One ``enarx registry serve`` process: ``url`` once it listens, ``ca`` to trust."""

    def __init__(self, state: Path, *args: str, tls: bool = False,
                 fsize_limit: int | None = None) -> None:
        self.state = state
        def limit() -> None:  # a "full disk": writes past this size fail with EFBIG
            if fsize_limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

        super().__init__("registry", ["--state-dir", str(state), *args,
                                      *([] if tls else ["--insecure-http"])],
                         clean_env(), preexec_fn=limit if fsize_limit is not None else None)
        self.ca: Path | None = state / "ca.crt" if tls else None

    def token(self, user: str, *extra: str) -> str:
        out = subprocess.run([str(ENARX), "registry", "token", "create", "--user", user,
                              "--state-dir", str(self.state), *extra],
                             capture_output=True, check=True, timeout=60)
        return out.stdout.decode().strip()
