"""Running the steward: state directory, keys, TLS, uvicorn.

State directory (0700; ``--state-dir``, default ``$XDG_STATE_HOME/enarx/steward``):

- ``ca.crt``       the CA certificate (PEM, 0644) — what Keeps and clients trust
- ``ca.key``       the CA key (PEM, 0600), unless ``--key/--crt`` supply the CA
- ``ear.key``      the EAR signing key (P-256 PEM, 0600)
- ``admin-token``  bearer token for resource writes (0600; ``--admin-token-file``)
- ``server.key`` / ``server.crt``  this process's TLS key and chain (0600 / 0644)
- ``steward.db``   the SQLite database when ``--db`` is not given

With a shared database (``--db postgresql://…``) the CA key, the EAR key and the admin token
live in the database (``Store.get_or_create_secret``), so every replica serves the same CA and
signs with the same key; the files above are then copies. Keys are never logged.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.errors import ConfigError, ResourceError, UsageError
from enarx.fsutil import atomic_write, ensure_private_dir, state_dir
from enarx.serving import bind, server_class

__all__ = [
    "StewardState",
    "default_state_dir",
    "load_policy",
    "load_qe_identity",
    "load_signers",
    "load_state",
    "make_app",
    "read_ca_pem",
    "serve",
]

log = logging.getLogger("enarx.steward")

_SECRET_CA = "ca"  # key PEM + cert PEM
_SECRET_EAR = "ear-key"
_SECRET_ADMIN = "admin-token"


def default_state_dir() -> Path:
    """``$STEWARD_STATE_DIR``, else ``$XDG_STATE_HOME/enarx/steward``."""
    return state_dir("steward", env="STEWARD_STATE_DIR")


@dataclass
class StewardState:
    """What ``serve`` needs, loaded from the state dir, the database and ``--key/--crt``."""

    state_dir: Path
    store: Any
    ca: Any
    ear_signer: Any
    admin_token: str


def _private_dir(path: Path) -> Path:
    try:
        return ensure_private_dir(path)
    except OSError as exc:
        raise ResourceError(f"cannot use the state directory {path}: {exc.strerror or exc}",
                            hint="pass --state-dir with a directory you own") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}",
                         hint="check the path and its permissions") from None


def _split_ca_secret(blob: bytes) -> tuple[bytes, bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    at = blob.find(marker)
    if at < 0:
        raise ConfigError("the stored CA secret has no certificate",
                          hint="the database is damaged; restore it or start a new state")
    return blob[:at], blob[at:]


def _new_ca_secret(state: Path) -> bytes:
    """First start: import an existing ca.key/ca.crt from the state dir, else make a CA."""
    from enarx.steward.ca import StewardCA

    key_file, crt_file = state / "ca.key", state / "ca.crt"
    if key_file.exists() and crt_file.exists():
        ca = StewardCA.from_pem(_read(key_file, "CA key"), _read(crt_file, "CA certificate"),
                                path=str(crt_file))
    else:
        ca = StewardCA.create("enarx steward CA")
    return ca.key_pem() + ca.cert_pem


def _new_ear_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_if_changed(path: Path, data: bytes, mode: int) -> None:
    try:
        if path.exists() and path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        raise ResourceError(f"cannot write {path}: {exc.strerror or exc}",
                            hint="check the state directory's permissions") from None


def load_state(state: Path, db: str | None, *, key: Path | None = None,
               crt: Path | None = None) -> StewardState:
    """Open the store and load (creating on first start) the CA, EAR key and admin token."""
    from enarx.steward.ca import StewardCA
    from enarx.steward.ear import EarSigner
    from enarx.steward.store import open_store

    if (key is None) != (crt is None):
        raise UsageError("--key and --crt go together",
                         hint="pass both (or STEWARD_KEY and STEWARD_CRT), or neither")
    given = None  # --key/--crt are checked before anything is created
    if key is not None and crt is not None:
        given = StewardCA.from_pem(_read(key, "CA key"), _read(crt, "CA certificate"),
                                   path=str(crt))
    state = _private_dir(Path(state))
    store = open_store(db, state)
    try:
        if given is not None:
            ca = given
        else:
            blob = store.get_or_create_secret(_SECRET_CA, lambda: _new_ca_secret(state))
            key_pem, cert_pem = _split_ca_secret(blob)
            ca = StewardCA.from_pem(key_pem, cert_pem, path="database secret 'ca'")
            _write_if_changed(state / "ca.key", key_pem, 0o600)
        _write_if_changed(state / "ca.crt", ca.cert_pem, 0o644)
        ear_pem = store.get_or_create_secret(_SECRET_EAR, _new_ear_key)
        _write_if_changed(state / "ear.key", ear_pem, 0o600)
        signer = EarSigner.from_pem(ear_pem)
        token = store.get_or_create_secret(
            _SECRET_ADMIN, lambda: secrets.token_urlsafe(32).encode()).decode()
        _write_if_changed(state / "admin-token", token.encode(), 0o600)
    except BaseException:
        store.close()
        raise
    return StewardState(state, store, ca, signer, token)


def read_ca_pem(state: Path, db: str | None = None) -> bytes:
    """The CA certificate ``enarx steward ca`` prints (from the state dir or the database)."""
    if db is not None:
        st = load_state(state, db)
        try:
            pem: bytes = st.ca.cert_pem
            return pem
        finally:
            st.store.close()
    path = Path(state) / "ca.crt"
    if not path.exists():
        raise UsageError(f"no steward CA in {state}",
                         hint="start the steward once (`enarx steward serve`) or pass "
                         "--state-dir / --db of a running one")
    return _read(path, "CA certificate")


def load_policy(path: Path) -> tuple[Any, list[bytes]]:
    """The steward policy and the PEM bytes of its ``trust_roots`` (relative to the file)."""
    from enarx.steward.policy import StewardPolicy

    policy = StewardPolicy.loads(_read(path, "policy").decode("utf-8", "replace"),
                                 source=str(path))
    roots: list[bytes] = []
    for entry in policy.trust_roots:
        p = Path(entry)
        if not p.is_absolute():
            p = path.parent / p
        try:
            roots.append(p.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read trust root {p}: {exc.strerror or exc}",
                              path=str(path), key="trust_roots",
                              hint="trust_roots paths are relative to the policy file") from None
    return policy, roots


def load_signers(path: Path, policy: Any) -> list[Any]:
    """The public keys the policy's ``[workload] signers`` name (relative to the file)."""
    from enarx.steward.signers import load_signer

    keys = []
    for entry in policy.workload.signers:
        p = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        try:
            pem = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read signer key {p}: {exc.strerror or exc}",
                              path=str(path), key="workload.signers",
                              hint="signers paths are relative to the policy file") from None
        keys.append(load_signer(pem, source=str(p)))
    return keys


def load_qe_identity(path: Path) -> tuple[bytes, bytes]:
    """``--sgx-qe-identity FILE``: the SGX QE Identity document (Intel PCS
    ``qe_identity.json``) and its issuer chain, ``qe_identity_issuer_chain.pem`` next to it."""
    chain = Path(path).with_name("qe_identity_issuer_chain.pem")
    return _read(Path(path), "SGX QE identity"), _read(chain, "QE identity issuer chain")


def make_app(policy_path: Path, state: StewardState, *, secure_cookies: bool = True,
             max_body: int | None = None, collateral: Path | None = None,
             sgx_qe_identity: Path | None = None) -> Any:
    """The ASGI app for ``policy_path`` over a loaded state; ``collateral`` is the Intel
    collateral cache for TDX/SGX quotes sent without it, ``sgx_qe_identity`` the QE Identity
    that upstream SGX CSRs (which carry none) are checked with."""
    from enarx.steward.app import MAX_BODY, create_app
    from enarx.steward.service import Steward

    policy, roots = load_policy(policy_path)
    qe = load_qe_identity(sgx_qe_identity) if sgx_qe_identity is not None else None
    if collateral is not None and not Path(collateral).is_dir():
        raise UsageError(f"--collateral {collateral}: not a directory",
                         hint="a directory of tcb_info.json, qe_identity.json, ... (optionally "
                         "in <fmspc>/ sub-directories)")
    steward = Steward(policy, state.ca, state.ear_signer, state.store, roots,
                      sgx_qe_identity=qe, collateral_dir=collateral,
                      signers=load_signers(policy_path, policy))
    return create_app(steward, admin_token=state.admin_token, secure_cookies=secure_cookies,
                      max_body=max_body or MAX_BODY)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def _setup_logging() -> None:
    logger = logging.getLogger("enarx.steward")
    if not any(getattr(h, "_enarx", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonLines())
        handler._enarx = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def serve(
    policy_path: Path,
    *,
    addr: str = "127.0.0.1",
    port: int = 3000,
    state: Path | None = None,
    db: str | None = None,
    key: Path | None = None,
    crt: Path | None = None,
    sans: Sequence[str] = (),
    insecure_http: bool = False,
    collateral: Path | None = None,
    sgx_qe_identity: Path | None = None,
    workers: int = 1,
) -> None:
    """Run until interrupted (SIGINT/SIGTERM end it cleanly); ``workers`` > 1 forks that
    many processes sharing the socket (``steward.workers``)."""
    import uvicorn

    from enarx.serving import warn

    policy_path = Path(policy_path)
    # refuse a bad policy (or options) before touching the state dir
    load_signers(policy_path, load_policy(policy_path)[0])
    if sgx_qe_identity is not None:
        load_qe_identity(sgx_qe_identity)
    if collateral is not None and not Path(collateral).is_dir():
        raise UsageError(f"--collateral {collateral}: not a directory",
                         hint="a directory of tcb_info.json, qe_identity.json, ...")
    state_path = state or default_state_dir()
    st = load_state(state_path, db, key=key, crt=crt)
    try:
        ssl: dict[str, Any] = {}
        if insecure_http:
            warn("--insecure-http: serving plain HTTP; put a TLS-terminating proxy in front")
        else:
            key_pem, chain_pem = st.ca.server_cert(list(sans))
            _write_if_changed(st.state_dir / "server.key", key_pem, 0o600)
            _write_if_changed(st.state_dir / "server.crt", chain_pem, 0o644)
            ssl = {"ssl_keyfile": str(st.state_dir / "server.key"),
                   "ssl_certfile": str(st.state_dir / "server.crt")}
        _setup_logging()
        scheme = "http" if insecure_http else "https"
        host = f"[{addr}]" if ":" in addr else addr
        sock = bind(addr, port, inheritable=True,
                    hint="pick another --port or --addr (is a steward already running there?)")
        url = f"{scheme}://{host}:{sock.getsockname()[1]}"

        def run(index: int, loaded: StewardState) -> None:
            app = make_app(policy_path, loaded, secure_cookies=not insecure_http,
                           collateral=collateral, sgx_qe_identity=sgx_qe_identity)
            config = uvicorn.Config(app, log_level="warning", access_log=False,
                                    server_header=False, lifespan="off", proxy_headers=False,
                                    timeout_graceful_shutdown=5, **ssl)
            # Only the first worker announces the URL (the socket is shared).
            server_class()(config, url if index == 0 else "", log).run(sockets=[sock])

        if workers <= 1:
            run(0, st)
            return
        st.store.close()  # no connection may cross a fork: each worker opens its own

        def child(index: int) -> None:
            loaded = load_state(state_path, db, key=key, crt=crt)
            try:
                run(index, loaded)
            finally:
                loaded.store.close()

        from enarx.steward.workers import run_workers

        if run_workers(workers, child) != 0:
            raise ResourceError("a steward worker failed", hint="see the messages above")
    finally:
        st.store.close()
