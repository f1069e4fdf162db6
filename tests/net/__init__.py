"""Tests for the net area."""
