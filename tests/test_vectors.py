"""The repository stands alone: vendored attestation vectors, no sibling folders, no path hacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.vectors import MISSING, VENDORED, all_vectors, load_manifest, location, vectors_dir

REPO = Path(__file__).resolve().parents[1]
KINDS = ("snp", "sgx", "tdx")
# Everything a user or CI gets in a clone (tests/data is checked separately, it is data).
SCANNED = ("src", "tests", "bench", "scripts", "docs", "examples", ".ci",
           "README.md", "Makefile", "pyproject.toml")
SKIP_SUFFIXES = {".wasm", ".bin", ".der", ".pyc", ".cer"}
BUILD_OUTPUT = {"__pycache__", ".zig-cache", "build", "dist"}  # git-ignored, not in a clone


def _text_files() -> list[Path]:
    out: list[Path] = []
    for name in SCANNED:
        top = REPO / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            rel = path.relative_to(REPO).parts
            if (not path.is_file() or path.suffix in SKIP_SUFFIXES
                    or any(part in BUILD_OUTPUT or part.endswith(".egg-info") for part in rel)
                    or rel[:2] == ("tests", "data") or path.stat().st_size > 1 << 20):
                continue
            out.append(path)
    return out


def _named_files(manifest: dict[str, object]) -> list[str]:
    """Every file a manifest names (evidence, certificates, collateral, trust anchor)."""
    names: list[str] = []
    evidence = manifest["evidence"]
    for item in evidence if isinstance(evidence, list) else [evidence]:
        assert isinstance(item, dict)
        names.append(item["file"])
    for group in ("certs", "collateral"):
        table = manifest.get(group) or {}
        assert isinstance(table, dict)
        # Some entries describe an issuer in prose ("2nd certificate of the chain ...").
        names += [v for v in table.values() if isinstance(v, str) and " " not in v]
    root = manifest.get("trusted_root")
    if isinstance(root, str):
        names.append(root)
    return names


def test_vectors_default_to_the_vendored_copy_inside_the_repo(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENARX_VECTORS", raising=False)
    assert location() == VENDORED
    assert VENDORED.is_relative_to(REPO) and VENDORED.is_dir()
    assert vectors_dir() == VENDORED
    for kind in KINDS:
        assert MISSING not in all_vectors(kind)
        assert len(all_vectors(kind)) >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_every_vendored_vector_is_complete_and_keeps_its_source(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENARX_VECTORS", raising=False)
    for name in all_vectors(kind):
        manifest = load_manifest(kind, name)
        folder = manifest["_dir"]
        assert manifest["kind"] == kind and manifest["name"] == name
        source = (folder / "SOURCE.md").read_text()
        assert "icense" in source, f"{kind}/{name}/SOURCE.md names no licence"
        for file in _named_files(manifest):
            assert (folder / file).is_file(), f"{kind}/{name}: {file} missing"


def test_vendored_roots_keep_their_source_and_match_the_shipped_intel_root() -> None:
    for sub in ("amd", "intel"):
        assert (VENDORED / "roots" / sub / "SOURCE.md").is_file()
    assert (VENDORED / "README.md").is_file()
    shipped = REPO / "src" / "enarx" / "attestation" / "roots" / "intel"
    name = "Intel_SGX_Provisioning_Certification_RootCA.pem"
    assert (shipped / name).read_bytes() == (VENDORED / "roots" / "intel" / name).read_bytes()


def test_enarx_vectors_points_the_tests_at_another_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(VENDORED / "snp" / "ms-milan-v3", tmp_path / "snp" / "ms-milan-v3")
    monkeypatch.setenv("ENARX_VECTORS", str(tmp_path))
    assert location() == tmp_path
    assert all_vectors("snp") == ["ms-milan-v3"]
    assert load_manifest("snp", "ms-milan-v3")["_dir"] == tmp_path / "snp" / "ms-milan-v3"
    assert all_vectors("sgx") == [MISSING]


def test_missing_vectors_skip_locally_and_fail_under_ci(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENARX_VECTORS", str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="point it at a copy"):
        vectors_dir()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="point it at a copy"):
        vectors_dir()


def test_nothing_in_the_repo_reaches_outside_it() -> None:
    sibling = "/".join(["..", "shared"])  # spelled apart so this file does not match itself
    offenders = [str(p.relative_to(REPO)) for p in _text_files()
                 if sibling in p.read_text(errors="replace")]
    assert offenders == []


def test_tests_import_helpers_as_a_package_without_path_edits() -> None:
    edits = ("sys.path." + "insert", "sys.path." + "append")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.py")
                 if "guests" not in p.relative_to(REPO).parts
                 and any(e in p.read_text() for e in edits)]
    assert offenders == []
    packages = {p.parent for p in (REPO / "tests").rglob("test_*.py")}
    assert all((d / "__init__.py").is_file() for d in packages), "a test folder is no package"


def test_no_test_silently_skips_on_a_helper_import() -> None:
    # An importorskip of the bare name snp_support turned into a silent skip once tests/
    # became a package: helpers are plain imports (`from tests.attestation import ...`).
    helpers = {p.stem for p in (REPO / "tests").rglob("*.py")
               if "guests" not in p.parts and not p.stem.startswith(("test_", "conftest", "__"))}
    offenders = [f"{p.relative_to(REPO)}: {h}" for p in (REPO / "tests").rglob("test_*.py")
                 if p != Path(__file__).resolve()
                 for h in helpers if f'importorskip("{h}")' in p.read_text()]
    assert offenders == []

