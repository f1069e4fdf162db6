"""The WASI preview1 shim: the only code a guest can reach.

Hand-written (wasmtime-py's built-in WASI has no preview1 sockets and no way to give
Enarx's fd model, files[i] = fd i). ``abi`` holds the pure ABI (errno, rights, layouts),
``fdtable`` the handles behind each fd, ``host`` binds every ``wasi_snapshot_preview1``
import into a wasmtime ``Linker``.
"""
