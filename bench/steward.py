"""Benchmark: steward attest+issue round trips vs the crypto-only ceiling, in one run.

    .venv/bin/python bench/steward.py [SECONDS] [CLIENTS]

A real ``enarx steward serve`` (uvicorn, TLS; ``--workers 1`` and ``--workers 2``) on
127.0.0.1 with a policy that allows the sim backend; CLIENTS (default 50) concurrent Keeps in
two separate load processes each loop over ``/kbs/v0/auth`` → ``/kbs/v0/attest`` (sim SEV-SNP
evidence over the exact REPORT_DATA) → ``/enarx/v1/certificate`` for SECONDS (default 10), on
one keep-alive TLS connection each with hand-built HTTP/1.1 requests (cheap, so the steward
is what is measured; the load generator's CPU per round trip is reported too). Reported for
SQLite and, when PostgreSQL is installed, PostgreSQL.

The ceiling is the cryptography one attestation needs, done in a loop on one core (measured
again right before each configuration, since other work on the machine moves it too): the SNP
report signature verify (ECDSA P-384; the chain is cached), the EAR signing and the token
check at issuance (ES256), the CSR signature check (ECDSA P-256) and the certificate signing
(ECDSA P-384). Goal: round trips/s >= 0.5x the ceiling. The Keeps' own work (sim signing,
CSRs) runs on the same 2 cores, so the ratio is a lower bound for the service.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from enarx.attestation.snp import SnpVerifier
from enarx.platform.sim import SimBackend
from enarx.steward import kbs
from enarx.steward.ca import StewardCA
from enarx.steward.ear import EarSigner, verify_ear

ENARX = Path(sys.executable).with_name("enarx")
#: steward processes (``--workers``) per configuration: one, and one per core
WORKERS = (1, 2)


def _best(fn: Any, n: int, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def ceiling(sim: SimBackend, n: int = 200) -> float:
    """Seconds of the signature work of one attestation + issuance."""
    ev = sim.evidence(bytes(64))
    verifier = SnpVerifier([sim.ark_pem()])
    verifier.verify(ev.blob, cert=ev.certs[0], chain=ev.certs[1:])  # warm the chain cache
    vcek = x509.load_der_x509_certificate(ev.certs[0]).public_key()
    assert isinstance(vcek, ec.EllipticCurvePublicKey)
    r = int.from_bytes(ev.blob[0x2A0:0x2E8], "little")
    s = int.from_bytes(ev.blob[0x2E8:0x330], "little")
    sig, body = encode_dss_signature(r, s), ev.blob[:0x2A0]
    signer = EarSigner.generate()
    jwks = signer.jwks()
    from enarx.steward.ear import build_ear

    claims = build_ear(now=time.time(), ttl=300, status="affirming",
                       vector={"hardware": 2}, policy_id="sha256:00", platform="snp",
                       workload=None, nonce="bm9uY2U=")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(key, hashes.SHA256()))
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    ca = StewardCA.create("bench")
    import datetime as dt

    def one() -> None:
        vcek.verify(sig, body, ec.ECDSA(hashes.SHA384()))
        token = signer.sign(claims)
        verify_ear(token, jwks, time.time())
        assert x509.load_der_x509_csr(csr_der).is_signature_valid
        ca.issue(key.public_key(), [], dt.timedelta(hours=24))

    return _best(one, n)


class Server:
    def __init__(self, policy: Path, state: Path, db: str | None, workers: int = 1) -> None:
        args = [str(ENARX), "steward", "serve", "--policy", str(policy), "--port", "0",
                "--state-dir", str(state), "--workers", str(workers)] + (
                    ["--db", db] if db else [])
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                if b'"listening"' in line and not self.url:
                    self.url = json.loads(line)["url"]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(60)
        if not self.url:
            self.stop()
            raise RuntimeError("steward did not start")
        self.ca = (state / "ca.crt").read_bytes()

    def cpu(self) -> float:
        """CPU seconds the server process and its workers have used (children are counted
        when they exit, so this is read after ``stop``; live workers are read directly)."""
        total = 0.0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class _Conn:
    """One HTTP/1.1 keep-alive connection over TLS (asyncio streams, hand-built requests):
    the cheapest client Python offers, so the load generator leaves the cores to the steward.
    One TLS handshake per Keep for the whole run (no reconnects, so no resumption needed)."""

    def __init__(self, url: str, ctx: ssl.SSLContext) -> None:
        host, port = url.removeprefix("https://").rsplit(":", 1)
        self.host, self.port, self.ctx = host, int(port), ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ctx, server_hostname=self.host)

    async def request(self, path: str, body: bytes, ctype: str,
                      cookie: str | None = None) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n")
        if cookie:
            head += f"Cookie: kbs-session-id={cookie}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


def _b64u(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


def _jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    nums = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64u(nums.x, 32), "y": _b64u(nums.y, 32),
            "alg": "ECDH-ES+A256KW"}


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def _keep_loop(url: str, ctx: ssl.SSLContext, sim: SimBackend, certs: list[str],
                     deadline: float, latencies: list[float], errors: list[str]) -> None:
    conn = _Conn(url, ctx)
    auth_body = b'{"version":"0.4.0","tee":"snp","extra-params":{}}'
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            key = ec.generate_private_key(ec.SECP256R1())
            status, headers, data = await conn.request("/kbs/v0/auth", auth_body,
                                                       "application/json")
            cookie = headers.get("set-cookie", "").split(";", 1)[0].partition("=")[2]
            rd = {"nonce": json.loads(data)["nonce"], "tee-pubkey": _jwk(key)}
            report = sim.report(kbs.expected_report_data(rd, ""))
            body = json.dumps({"runtime-data": rd, "tee-evidence": {"primary_evidence": {
                "attestation_report": base64.b64encode(report).decode(), "cert_chain": certs},
                "additional_evidence": ""}}).encode()
            status, _, data = await conn.request("/kbs/v0/attest", body, "application/json",
                                                 cookie)
            if status != 200:
                errors.append(data.decode(errors="replace"))
                continue
            csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
                   .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
            status, _, data = await conn.request("/enarx/v1/certificate", csr,
                                                 "application/pkcs10", cookie)
            if status != 200:
                errors.append(data.decode(errors="replace"))
                continue
            latencies.append(time.perf_counter() - t0)
    finally:
        await conn.close()


def _load_process(url: str, ca_pem: bytes, sim_dir: str, seconds: float,
                  clients: int) -> tuple[list[float], list[str], float]:
    sim = SimBackend(Path(sim_dir))
    ev = sim.evidence(bytes(64))
    certs = [base64.b64encode(c).decode() for c in ev.certs]
    latencies: list[float] = []
    errors: list[str] = []
    ctx = ssl.create_default_context(cadata=ca_pem.decode())

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_keep_loop(url, ctx, sim, certs, deadline, latencies, errors)
                               for _ in range(clients)))

    cpu0 = time.process_time()
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return latencies, errors, time.process_time() - cpu0


def run_load(url: str, ca_pem: bytes, sim_dir: Path, seconds: float, clients: int,
             processes: int = 2) -> tuple[float, list[float], list[str], float]:
    """CLIENTS Keeps spread over PROCESSES load processes; (window, latencies, errors, CPU
    seconds the load processes used)."""
    latencies: list[float] = []
    errors: list[str] = []
    client_cpu = 0.0
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        shares = [clients // processes + (i < clients % processes) for i in range(processes)]
        for lat, err, cpu in pool.map(_load_process, [url] * processes, [ca_pem] * processes,
                                      [str(sim_dir)] * processes, [seconds] * processes,
                                      shares):
            latencies += lat
            errors += err
            client_cpu += cpu
    return seconds, latencies, errors, client_cpu  # round trips started within the window


def _report(name: str, wall: float, lat: list[float], errors: list[str], ceil: float) -> None:
    rps = len(lat) / wall
    p50 = statistics.median(lat) * 1e3 if lat else float("nan")
    p99 = sorted(lat)[int(len(lat) * 0.99) - 1] * 1e3 if lat else float("nan")
    print(f"{name:14s} {len(lat):6d} round trips in {wall:5.1f} s = {rps:7.1f}/s  "
          f"({rps * ceil:5.2f}x ceiling; goal >= 0.5x)  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
          f"  errors {len(errors)}")
    if errors:
        print("  first error:", errors[0][:200])


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("ENARX_SIM_DIR", str(root / "sim"))
        sim = SimBackend(Path(os.environ["ENARX_SIM_DIR"]))
        (root / "ark.pem").write_bytes(sim.ark_pem())
        policy = root / "steward.toml"
        policy.write_text('allow = ["sim"]\ntrust_roots = ["ark.pem"]\n')
        ceil = ceiling(sim)
        print(f"crypto-only ceiling: {ceil * 1e3:.2f} ms per attestation = {1 / ceil:.0f}/s "
              f"(one core); {clients} concurrent Keeps for {seconds:.0f} s each")
        backends: list[tuple[str, str | None, Any]] = [("sqlite", None, None)]
        try:
            from tests.steward.pg import start_postgres

            pg = start_postgres()
            backends.append(("postgresql", pg.create_database(), pg))
        except Exception as exc:  # no PostgreSQL here: report SQLite only
            print(f"postgresql: skipped ({exc})")
        try:
            for name, db, _pg in backends:
                for workers in WORKERS:
                    label = f"{name}/{workers}w"
                    # Other work on the machine moves the ceiling too: measure it again right
                    # before each configuration and compare against that one.
                    ceil = ceiling(sim)
                    server = Server(policy, root / f"state-{name}", db, workers)
                    try:
                        cpu0 = server.cpu()
                        wall, lat, errors, ccpu = run_load(server.url, server.ca,
                                                           sim.state_dir, seconds, clients)
                        cpu = server.cpu() - cpu0
                    finally:
                        server.stop()
                    _report(label, wall, lat, errors, ceil)
                    print(f"{'':14s} ceiling measured just before: {ceil * 1e3:.2f} ms "
                          f"= {1 / ceil:.0f}/s")
                    if lat:
                        per = cpu / len(lat)
                        print(f"{'':14s} steward CPU {per * 1e3:.2f} ms per round trip "
                              f"({ceil / per:.2f}x of the ceiling's crypto); load generator "
                              f"{ccpu / len(lat) * 1e3:.2f} ms")
        finally:
            for _, _, pg in backends:
                if pg is not None:
                    pg.stop()

if __name__ == "__main__":
    main()
