"""Tests for the wasi area."""
