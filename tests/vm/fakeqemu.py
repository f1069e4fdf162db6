"""A stand-in ``qemu-system-x86_64`` for the host side's fault paths (no VM is booted).

It is NOT presented as QEMU: tests use it where the real thing cannot be had here (QEMU 9.1+
for sev-snp-guest, an old QEMU) or to play a failure on cue (a guest whose agent dies).
``--version`` prints the version it was installed with; every other call appends its argv
(JSON, one line) to ``argv.jsonl`` next to it, then:

- ``fail``: prints ``ERROR`` to stderr and exits 1 (QEMU refusing an option);
- ``die``: serves the agent socket of ``-chardev socket,id=agent,path=…``, says hello (``H``)
  like the agent, reads the request and module, writes a kernel-ish line to the console log
  and exits without an ``X`` frame: the agent died mid-run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["ERROR", "install", "recorded"]

ERROR = "qemu-system-x86_64: fake: refusing to start (test stand-in)"
CONSOLE_LINE = "fake guest: enarx-agent killed by signal 9"

_SCRIPT = '''#!{python}
import json, os, socket, sys
sys.path[:0] = {path!r}
here = os.path.dirname(os.path.abspath(__file__))
if sys.argv[1:] == ["--version"]:
    print("QEMU emulator version {version}\\nCopyright (c) 2003-2024 Fabrice Bellard")
    sys.exit(0)
with open(os.path.join(here, "argv.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if {behaviour!r} == "fail":
    print({error!r}, file=sys.stderr)
    sys.exit(1)
from enarx.vm.agent import encode, read_frame
chardevs = [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "-chardev"]
props = {{c.split(",")[1]: dict(p.split("=", 1) for p in c.split(",")[1:]) for c in chardevs}}
agent, console = props["id=agent"]["path"], props["id=console"]["path"]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(agent)
srv.listen(1)
conn, _ = srv.accept()
conn.sendall(encode(b"H"))
read_frame(conn.recv)
read_frame(conn.recv)
with open(console, "a") as f:
    f.write({console_line!r} + "\\n")
sys.exit(0)
'''


def install(bin_dir: Path, version: str, behaviour: str = "fail") -> Path:
    """Write the stand-in as ``bin_dir/qemu-system-x86_64``; returns ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "qemu-system-x86_64"
    src = str(Path(__file__).resolve().parents[2] / "src")
    script.write_text(_SCRIPT.format(python=sys.executable, path=[src], version=version,
                                     behaviour=behaviour, error=ERROR,
                                     console_line=CONSOLE_LINE))
    script.chmod(0o755)
    return bin_dir


def recorded(bin_dir: Path) -> list[list[str]]:
    """The argv of every non-``--version`` call, in order."""
    log = bin_dir / "argv.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]
