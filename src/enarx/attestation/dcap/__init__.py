"""attestation/dcap."""
