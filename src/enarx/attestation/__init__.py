"""Pure verification of TEE evidence: bytes in, typed results out, no I/O.

``snp/`` verifies AMD SEV-SNP reports (hand-written: no maintained Python library exists),
``dcap/`` verifies Intel SGX and TDX quotes through ``dcap-qvl``, ``policy`` appraises a
verified result against an owner's policy. Every platform yields one ``VerifiedEvidence``.
"""

__all__: list[str] = []  # import the submodules: snp, dcap, policy, result, kind, roots
