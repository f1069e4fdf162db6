"""enarx: run WebAssembly workloads in attested Trusted Execution Environments (Keeps)."""

__version__ = "0.1.0"
