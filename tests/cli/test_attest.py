"""`enarx attest verify|report` as a user drives it: real vectors, real files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from enarx.cli.attest import attest
from tests.attestation.dcap_support import DCAP, DcapVector, load_dcap
from tests.vectors import vector_dir

VALID = [(k, n) for k, n in DCAP if n not in ("gotdxguest-tdx-v4", "dcapqvl-tdx-v5-nomatch",
                                              "dcaprs-sgx-v3")]


def _verify_args(v: DcapVector, tmp_path: Path, *extra: str) -> list[str]:
    coll = v.write_collateral_dir(tmp_path / "collateral")
    return ["verify", str(v.folder / "quote.bin"), "--platform", v.kind,
            "--collateral", str(coll), *extra]


@pytest.mark.parametrize(("kind", "name"), VALID)
def test_verify_valid_vector_json(kind: str, name: str, tmp_path: Path) -> None:
    v = load_dcap(kind, name)
    res = CliRunner().invoke(attest, _verify_args(v, tmp_path, "--at",
                                                  v.manifest["verify_at"], "--json"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["platform"] == kind
    assert out["tcb_status"] == v.expected["tcb_status"]
    assert out["report_data"] == v.manifest["evidence"]["report_data_hex"]
    assert out["debug"] is False and len(out["measurement"]) in (64, 96)
    assert out["advisory_ids"] == v.expected.get("advisory_ids",
                                                 v.expected.get("advisory_ids_local_analysis"))


def test_verify_no_matching_tcb_exits_nonzero_with_check(tmp_path: Path) -> None:
    v = load_dcap("tdx", "gotdxguest-tdx-v4")
    res = CliRunner().invoke(attest, _verify_args(v, tmp_path, "--at", v.manifest["verify_at"],
                                                  "--json"))
    assert res.exit_code == 4
    err = json.loads(res.output)["error"]
    assert err["check"] == "dcap.tcb.no_match" and "No matching TCB level" in err["message"]
    assert {"expected", "actual", "message"} <= set(err)


def test_verify_today_reports_expired_collateral(tmp_path: Path) -> None:
    v = load_dcap("tdx", "dcapqvl-tdx-v4")
    res = CliRunner().invoke(attest, _verify_args(v, tmp_path, "--json"))
    assert res.exit_code == 4
    assert "expired" in json.loads(res.output)["error"]["check"]


def test_human_output_and_wrong_platform(tmp_path: Path) -> None:
    v = load_dcap("sgx", "zkdcap-sgx-v3")
    ok = CliRunner().invoke(attest, _verify_args(v, tmp_path, "--at", v.manifest["verify_at"]))
    assert ok.exit_code == 0 and "SWHardeningNeeded" in ok.output and "verified" in ok.output
    args = _verify_args(v, tmp_path, "--at", v.manifest["verify_at"])
    args[args.index("--platform") + 1] = "tdx"
    wrong = CliRunner().invoke(attest, args)
    assert wrong.exit_code == 2 and "use --platform sgx" in wrong.output


@pytest.mark.parametrize("case", ["evidence", "collateral-file", "collateral-dir", "at", "mix"])
def test_bad_arguments_are_clear_errors(case: str, tmp_path: Path) -> None:
    v = load_dcap("tdx", "dcapqvl-tdx-v4")
    args = _verify_args(v, tmp_path, "--at", v.manifest["verify_at"])
    want = ""
    if case == "evidence":
        args[1], want = str(tmp_path / "nope.bin"), "no such file"
    elif case == "collateral-file":
        (tmp_path / "collateral" / "pck_crl.der").unlink()
        want = "pck_crl.der"
    elif case == "collateral-dir":
        args[args.index("--collateral") + 1], want = str(tmp_path / "none"), "not a directory"
    elif case == "at":
        args[args.index("--at") + 1], want = "yesterday", "ISO 8601"
    else:
        args += ["--cert", str(v.folder / "quote.bin")]
        want = "SNP"
    res = CliRunner().invoke(attest, args)
    assert res.exit_code == 2, res.output
    assert want in res.output and "hint:" in res.output
    assert ("Traceback" not in res.output and res.exception is None) or isinstance(
        res.exception, SystemExit)


def test_verify_snp_vector(tmp_path: Path) -> None:
    from tests.vectors import load_manifest

    m = load_manifest("snp", "ms-milan-v3")
    d: Path = m["_dir"]
    res = CliRunner().invoke(attest, [
        "verify", str(d / "report.bin"), "--platform", "snp", "--cert", str(d / "vcek.pem"),
        "--chain", str(d / "ask.pem"), "--at", m["verify_at"], "--json",
    ])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["platform"] == "snp" and out["tcb_status"] == "UpToDate"


def test_report_without_tee_names_sim(tmp_path: Path) -> None:
    from enarx import platform as plat

    if any(plat.get(n).available() for n in ("sev-snp", "tdx", "sgx")):
        pytest.skip("this host has a confidential backend")
    res = CliRunner().invoke(attest, ["report", "--json"])
    assert res.exit_code == 3
    assert "--platform sim" in json.loads(res.output)["error"]["hint"]


def test_report_bad_report_data() -> None:
    res = CliRunner().invoke(attest, ["report", "--platform", "sim", "--report-data", "zz"])
    assert res.exit_code == 2 and "not hex" in res.output


# --- the real entry point, as a separate process ------------------------------------------


def test_subprocess_verify_real_vectors(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = load_dcap("tdx", "gotdxguest-tdx-v5")
    res = enarx("attest", *_verify_args(good, tmp_path / "a", "--at",
                                        good.manifest["verify_at"], "--json"))
    assert res.returncode == 0, res.stderr.decode()
    assert json.loads(res.stdout)["tcb_status"] == "UpToDate"
    bad = load_dcap("tdx", "gotdxguest-tdx-v4")
    res = enarx("attest", *_verify_args(bad, tmp_path / "b", "--at",
                                        bad.manifest["verify_at"]))
    assert res.returncode == 4
    assert b"dcap.tcb.no_match" in res.stderr and b"Traceback" not in res.stderr


def test_subprocess_sim_report_then_verify(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"ENARX_SIM_DIR": str(tmp_path / "sim")}
    out = tmp_path / "r.bin"
    rd = "ab" * 32
    res = enarx("attest", "report", "--platform", "sim", "--report-data", rd, "--out", out,
                env=env)
    assert res.returncode == 0, res.stderr.decode()
    assert b"warning" in res.stderr  # sim is loud
    assert out.stat().st_size == 1184
    res = enarx("attest", "verify", out, "--platform", "snp", "--cert", f"{out}.vcek.pem",
                "--chain", f"{out}.chain.pem", "--trust-root", f"{out}.ark.pem", "--json",
                env=env)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    assert json.loads(res.stdout)["report_data"] == rd + "00" * 32  # zero-padded to 64 bytes
    assert b"not an AMD/Intel root" in res.stderr  # a test root is loud too
    # Without the sim root the chain does not lead to an AMD root.
    res = enarx("attest", "verify", out, "--platform", "snp", "--cert", f"{out}.vcek.pem",
                "--chain", f"{out}.chain.pem", "--json", env=env)
    assert res.returncode == 4


def test_shipped_root_as_trust_root_is_quiet(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from enarx.attestation.roots import amd_ark

    folder = vector_dir("snp", "ms-milan-v3")
    ark = tmp_path / "ark.pem"
    ark.write_bytes(amd_ark("Milan"))
    res = enarx("attest", "verify", folder / "report.bin", "--platform", "snp", "--cert",
                folder / "vcek.pem", "--trust-root", ark, "--json")
    assert res.returncode == 0, res.stdout
    assert b"warning" not in res.stderr


# --- --policy: the documented appraisal, from the CLI ----------------------------------------


def _policy_args(tmp_path: Path, text: str, name: str = "policy.toml") -> list[str]:
    v = load_dcap("sgx", "zkdcap-sgx-v3")  # SWHardeningNeeded with two advisories
    policy = tmp_path / name
    policy.write_text(text)
    return _verify_args(v, tmp_path, "--at", v.manifest["verify_at"], "--policy", str(policy))


def test_policy_that_accepts_the_evidence(tmp_path: Path) -> None:
    v = load_dcap("sgx", "zkdcap-sgx-v3")
    ev = v.verify()
    text = (f'platforms = ["sgx"]\nmeasurements = ["{ev.measurement.hex()}"]\n'
            f'tcb_statuses = ["{ev.tcb.status.value}"]\n'
            f"advisory_ids = {json.dumps(list(ev.tcb.advisory_ids))}\n")
    res = CliRunner().invoke(attest, [*_policy_args(tmp_path, text), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["policy"]["accepted"] is True
    human = CliRunner().invoke(attest, _policy_args(tmp_path, text))
    assert human.exit_code == 0 and "accepted" in human.output


def test_policy_rejection_exits_4_listing_every_failed_rule(tmp_path: Path) -> None:
    text = 'measurements = ["00"]\n'  # and the default: UpToDate only, no advisories
    res = CliRunner().invoke(attest, _policy_args(tmp_path, text))
    assert res.exit_code == 4, res.output
    for rule in ("measurement not allowed", "TCB status not accepted",
                 "unaccepted security advisories"):
        assert rule in res.output
    res = CliRunner().invoke(attest, [*_policy_args(tmp_path, text), "--json"])
    assert res.exit_code == 4
    checks = [v["check"] for v in json.loads(res.output)["error"]["violations"]]
    assert checks == ["policy.measurement", "policy.tcb_status", "policy.advisory_ids"]


@pytest.mark.parametrize(("name", "text", "want"), [
    ("policy.toml", 'measurements = ["xyz"]\n', "measurements"),
    ("policy.toml", "unknown_rule = 1\n", "unknown_rule"),
    ("policy.toml", "measurements = [\n", "not valid TOML"),
    ("policy.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("policy.toml", "a = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_malformed_policy_file_exits_2(tmp_path: Path, name: str, text: str, want: str) -> None:
    res = CliRunner().invoke(attest, _policy_args(tmp_path, text, name))
    assert res.exit_code == 2, res.output
    assert want in res.output and name in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


# --- one --platform spelling -----------------------------------------------------------------


def test_sev_snp_is_an_alias_of_snp_in_verify_and_report(tmp_path: Path) -> None:
    from tests.vectors import load_manifest

    m = load_manifest("snp", "ms-milan-v3")
    d: Path = m["_dir"]
    outs = []
    for spelling in ("snp", "sev-snp", "SEV-SNP", "SNP"):
        res = CliRunner().invoke(attest, [
            "verify", str(d / "report.bin"), "--platform", spelling, "--cert",
            str(d / "vcek.pem"), "--at", m["verify_at"], "--json"])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.output))
    assert outs[0] == outs[1] == outs[2] == outs[3]
    # report: both spellings name the same backend, and the same refusal when it is absent.
    got = [CliRunner().invoke(attest, ["report", "--platform", p, "--json"])
           for p in ("snp", "sev-snp")]
    assert got[0].exit_code == got[1].exit_code and got[0].output == got[1].output
    help_text = CliRunner().invoke(attest, ["report", "--help"]).output
    assert "sim|snp|tdx|sgx" in help_text


def test_report_json_names_platform_and_backend(tmp_path: Path) -> None:
    env = {"ENARX_SIM_DIR": str(tmp_path / "sim")}
    res = CliRunner(env=env).invoke(attest, ["report", "--platform", "sim", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # the "not confidential" warning goes to stderr
    assert out["platform"] == "sim" and out["backend"] == "sim"


# --- forged chains and malformed inputs: typed errors, never a traceback ----------------------


def test_forged_embedded_root_is_not_reported_as_verified(tmp_path: Path) -> None:
    from tests.attestation.test_dcap_tamper import _quote_with_chain, _rename_root

    v = load_dcap("sgx", "zkdcap-sgx-v3")
    quote = tmp_path / "forged.bin"
    quote.write_bytes(_quote_with_chain(v, _rename_root))
    args = _verify_args(v, tmp_path, "--at", v.manifest["verify_at"], "--json")
    args[1] = str(quote)
    res = CliRunner().invoke(attest, args)
    assert res.exit_code == 4, res.output
    err = json.loads(res.output)["error"]
    assert err["check"] == "dcap.chain.root" and "chain" not in json.loads(res.output)


def _bad_version(pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
    at = der.find(b"\xa0\x03\x02\x01\x02")  # version [0] INTEGER 2 (v3)
    der[at + 4] = 7
    return bytes(der)


def test_trust_root_with_an_invalid_x509_version(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from enarx.attestation.roots import amd_ark, intel_sgx_root

    v = load_dcap("sgx", "zkdcap-sgx-v3")
    intel = tmp_path / "intel.der"
    intel.write_bytes(_bad_version(intel_sgx_root()))
    res = enarx("attest", *_verify_args(v, tmp_path, "--at", v.manifest["verify_at"],
                                        "--trust-root", str(intel)))
    assert res.returncode == 4, res.stderr
    assert b"dcap.trust_root" in res.stderr and b"Traceback" not in res.stderr
    folder = vector_dir("snp", "ms-milan-v3")
    amd = tmp_path / "amd.der"
    amd.write_bytes(_bad_version(amd_ark("Milan")))
    res = enarx("attest", "verify", folder / "report.bin", "--platform", "snp", "--cert",
                folder / "vcek.pem", "--trust-root", amd)
    assert res.returncode == 4, res.stderr
    assert b"snp.cert.trust_root" in res.stderr and b"Traceback" not in res.stderr


def test_snp_crl_with_a_malformed_issuer_name(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.attestation.test_snp_chain import malformed_issuer_crl

    folder = vector_dir("snp", "ms-milan-v3")
    crl = tmp_path / "bad.crl"
    crl.write_bytes(malformed_issuer_crl())
    res = enarx("attest", "verify", folder / "report.bin", "--platform", "snp", "--cert",
                folder / "vcek.pem", "--crl", crl, "--at", "2026-06-01T00:00:00Z")
    assert res.returncode == 4, res.stderr
    assert b"snp.crl" in res.stderr and b"Traceback" not in res.stderr
