"""attestation/roots."""
