"""Types shared by tests that drive the real `enarx` entry point (fixture in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ENARX = Path(sys.executable).with_name("enarx")

RunEnarx = Callable[..., subprocess.CompletedProcess[bytes]]
