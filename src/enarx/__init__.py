"""enarx: run WebAssembly workloads in attested Trusted Execution Environments (Keeps)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
