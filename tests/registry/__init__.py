"""Tests of the embedded package registry (src/enarx/registry/)."""
