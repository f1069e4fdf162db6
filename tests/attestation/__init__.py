"""Tests for the attestation area."""
