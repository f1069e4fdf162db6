"""Intel SGX and TDX DCAP quote verification (pure; signatures, chains and TCB via dcap-qvl)."""

from enarx.attestation.dcap.collateral import FILES as COLLATERAL_FILES
from enarx.attestation.dcap.collateral import Collateral
from enarx.attestation.dcap.quote import ParsedQuote, parse_quote
from enarx.attestation.dcap.verify import verify_quote

__all__ = ["COLLATERAL_FILES", "Collateral", "ParsedQuote", "parse_quote", "verify_quote"]
