"""Running the registry: state directory, TLS (with optional client certificates), uvicorn.

State directory (0700; ``--state-dir``, default ``$XDG_STATE_HOME/enarx/registry``):

- ``registry.db``     the SQLite database when ``--db`` is not given
- ``blobs/``          content-addressed files (``blobs/sha256/<2 hex>/<64 hex>``), 0600
- ``ca.crt``/``ca.key``  the registry's own TLS CA (made on first start; clients trust
  ``ca.crt`` unless ``--tls-cert/--tls-key`` supply a certificate)
- ``server.crt``/``server.key``  this process's TLS chain and key

With ``--steward-ca PEM`` the TLS listener asks for an optional client certificate and
verifies it against that CA; the DER of a verified peer certificate is put in each request's
ASGI ``state`` (uvicorn passes no TLS details to the app, so our HTTP protocol class reads it
from the connection's SSL object once the handshake is done).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

from enarx.errors import ResourceError, UsageError
from enarx.fsutil import atomic_write, ensure_private_dir, state_dir
from enarx.serving import bind, server_class

__all__ = ["default_state_dir", "open_db", "open_registry", "peer_cert_protocol", "serve"]

log = logging.getLogger("enarx.registry")


def default_state_dir() -> Path:
    """``$ENARX_REGISTRY_STATE_DIR``, else ``$XDG_STATE_HOME/enarx/registry``."""
    return state_dir("registry", env="ENARX_REGISTRY_STATE_DIR")


def _private_dir(path: Path) -> Path:
    try:
        return ensure_private_dir(Path(path))
    except OSError as exc:
        raise ResourceError(f"cannot use the state directory {path}: {exc.strerror or exc}",
                            hint="pass --state-dir with a directory you own") from None


def open_db(state: Path, db: str | None) -> Any:
    """The RegistryDB of a state directory (created 0700 if needed) or of ``--db``."""
    from enarx.registry.db import RegistryDB

    return RegistryDB(db, _private_dir(state))


def open_registry(state: Path, db: str | None) -> tuple[Any, Any]:
    """(RegistryDB, BlobStore) of a state directory (created 0700 if needed)."""
    from enarx.registry.blobs import BlobStore

    state = _private_dir(state)
    try:
        blobs = BlobStore(state / "blobs")
    except OSError as exc:
        raise ResourceError(f"cannot use {state / 'blobs'}: {exc.strerror or exc}",
                            hint="check the state directory's permissions") from None
    return open_db(state, db), blobs


def peer_cert_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11), plus the TLS peer
    certificate in each request's state."""
    from enarx.registry.app import PEER_CERT_KEY

    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is optional for uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class PeerCertProtocol(base):  # type: ignore[misc]
        app_state: dict[str, Any]

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            sslobj = transport.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            # per connection: the copy each request's scope["state"] is made from
            self.app_state = {**self.app_state, PEER_CERT_KEY: der}

    return PeerCertProtocol


def _tls_files(state: Path, sans: list[str]) -> tuple[Path, Path]:
    from enarx.steward.ca import StewardCA

    key_file, crt_file = state / "ca.key", state / "ca.crt"
    try:
        if key_file.exists() and crt_file.exists():
            ca = StewardCA.from_pem(key_file.read_bytes(), crt_file.read_bytes(),
                                    path=str(crt_file))
        else:
            ca = StewardCA.create("enarx registry CA")
            atomic_write(key_file, ca.key_pem(), mode=0o600)
            atomic_write(crt_file, ca.cert_pem, mode=0o644)
        key_pem, chain_pem = ca.server_cert(sans)
        atomic_write(state / "server.key", key_pem, mode=0o600)
        atomic_write(state / "server.crt", chain_pem, mode=0o644)
    except OSError as exc:
        raise ResourceError(f"cannot write the registry's TLS files in {state}: "
                            f"{exc.strerror or exc}",
                            hint="check the state directory's permissions") from None
    return state / "server.key", state / "server.crt"


def serve(*, addr: str = "127.0.0.1", port: int = 8443, state: Path | None = None,
          db: str | None = None, steward_ca: Path | None = None, insecure_http: bool = False,
          tls_cert: Path | None = None, tls_key: Path | None = None,
          sans: tuple[str, ...] = (), max_blob: int | None = None,
          idle_timeout: float | None = None) -> None:
    """Run until interrupted (SIGINT/SIGTERM end it cleanly)."""
    import uvicorn

    from enarx.registry.app import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BLOB, create_app
    from enarx.registry.auth import load_cas
    from enarx.serving import warn

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together", hint="pass both or neither")
    if insecure_http and steward_ca is not None:
        raise UsageError("--steward-ca needs TLS (client certificates)",
                         hint="drop --insecure-http")
    cas = []
    if steward_ca is not None:
        try:
            pem = Path(steward_ca).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --steward-ca {steward_ca}: {exc.strerror or exc}",
                             hint="pass the PEM `enarx steward ca` prints") from None
        cas = load_cas(pem, f"--steward-ca {steward_ca}")
    state = _private_dir(state or default_state_dir())
    database, blobs = open_registry(state, db)
    try:
        blobs.remove_stale()
        app = create_app(database, blobs, steward_cas=cas, max_blob=max_blob or DEFAULT_MAX_BLOB,
                         idle_timeout=idle_timeout or DEFAULT_IDLE_TIMEOUT)
        ssl_opts: dict[str, Any] = {}
        if insecure_http:
            warn("--insecure-http: serving plain HTTP; use it on loopback or behind a "
                 "TLS-terminating proxy only")
        else:
            if tls_cert is not None and tls_key is not None:
                key_file, crt_file = Path(tls_key), Path(tls_cert)
            else:
                key_file, crt_file = _tls_files(state, list(sans))
            ssl_opts = {"ssl_keyfile": str(key_file), "ssl_certfile": str(crt_file)}
            if steward_ca is not None:
                ssl_opts.update(ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_ca_certs=str(steward_ca))
        _setup_logging()
        sock = bind(addr, port)
        host = f"[{addr}]" if ":" in addr else addr
        url = f"{'http' if insecure_http else 'https'}://{host}:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                                lifespan="off", timeout_graceful_shutdown=5,
                                http=peer_cert_protocol(), **ssl_opts)
        server = server_class()(config, url, log)
        try:
            server.run(sockets=[sock])
        except ssl.SSLError as exc:
            raise UsageError(f"cannot load the TLS files: {exc}",
                             hint="check --tls-cert/--tls-key/--steward-ca") from None
    finally:
        database.close()


def _setup_logging() -> None:
    logger = logging.getLogger("enarx.registry")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
