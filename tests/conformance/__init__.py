"""Tests for the conformance area."""
