"""Tests for the cli area."""
