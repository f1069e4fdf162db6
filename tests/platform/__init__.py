"""Tests for the platform area."""
