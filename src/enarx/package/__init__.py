"""Packages: a directory with ``main.wasm``, optional ``Enarx.toml`` and data files,
identified by the digest of its Merkle tree (see docs/packages.md).

Modules: ``errors`` (typed refusals), ``digest`` (Content-Digest, streaming checks), ``tree``
(entries, directories, the tree digest and package identity), ``spec`` (SPEC strings),
``local`` (``file://`` read and atomic write). Clients, encryption and signatures: siblings.
"""
