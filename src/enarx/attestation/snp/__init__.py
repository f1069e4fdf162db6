"""attestation/snp."""
