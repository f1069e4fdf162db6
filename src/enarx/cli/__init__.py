"""Thin command-line layer: parse arguments, call one function below, render the result."""
