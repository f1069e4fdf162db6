"""kill -9 during a write loop: every file is at an old or a new authenticated state per block.

The encdir_io guest rewrites every block of several multi-block files (and re-creates small
files with O_TRUNC) in a loop inside `enarx run`; the test kills the whole process with
SIGKILL at varying moments, several times over the same directory, then checks the
documented guarantee (docs/encrypted-dirs.md, "Crash safety") the way a user would: the
guest reads every block back (no EIO, each block a whole record of its own file and index),
and `enarx dir decrypt` authenticates the whole tree.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import time
from pathlib import Path

from tests.cliutil import ENARX, RunEnarx
from tests.encdir.encutil import BLOCK, EncBox, guest

NFILES, NBLOCKS = 3, 8  # 512 KiB files: a commit takes a while


def _run_and_kill(box: EncBox, module_cache: Path, gens: int, extra_delay: float) -> int:
    """Start the write loop, let it finish ``gens`` generations, wait ``extra_delay`` s
    more, SIGKILL it; return the last generation it reported complete."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
    env["ENARX_CACHE_DIR"] = str(module_cache)
    proc = subprocess.Popen(
        [str(ENARX), "run", "--backend", "nil", "--dir", f"{box.host}::/data:enc={box.key}",
         str(guest()), "loop", "/data", str(NFILES), str(NBLOCKS)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    last = 0
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        pending = b""
        while last < gens:
            assert time.monotonic() < deadline, "the write loop made no progress"
            assert proc.poll() is None, f"the write loop exited with {proc.returncode}"
            if not sel.select(timeout=1):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                assert line.startswith(b"gen "), line
                last = int(line.split()[1])
        time.sleep(extra_delay)
        assert proc.poll() is None, "the loop must still be writing when it is killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return last


def test_kill_9_during_writes_leaves_every_block_old_or_new(
        enarx: RunEnarx, tmp_path: Path, module_cache: Path) -> None:
    box = EncBox(enarx, tmp_path)
    rng = random.Random(12)
    journals = rounds = 0
    # At least 6 kills, and on until 2 of them hit a commit (a journal is left; about every
    # other kill does): the recovery path is exercised, not only clean stops.
    while rounds < 6 or (journals < 2 and rounds < 30):
        _run_and_kill(box, module_cache, gens=1 + rounds % 3, extra_delay=rng.uniform(0, 0.05))
        journals += len(list(box.host.glob("*.j")))
        rounds += 1
        rc, out, err = box.run("verify", "/data", str(NFILES), str(NBLOCKS))
        assert rc == 0 and not [line for line in out if line.startswith("bad")], (out, err)
        assert out[-1].startswith("max ") and int(out[-1].split()[1]) >= 1
    assert journals >= 1, f"no kill of {rounds} hit a commit"
    # the host-side tool authenticates every file and name of the crashed tree too
    r = enarx("dir", "decrypt", box.host, tmp_path / "plain", "--key", box.key)
    assert r.returncode == 0, r.stderr.decode()
    plain = tmp_path / "plain"
    for k in range(NFILES):
        data = (plain / f"f{k}").read_bytes()
        assert len(data) == NBLOCKS * BLOCK
        gens = set()
        for b in range(NBLOCKS):
            blk = data[b * BLOCK:(b + 1) * BLOCK]
            assert blk == blk[:16] * (BLOCK // 16) and blk[:8] == b"%04x%04x" % (k, b)
            gens.add(blk[8:16])
        # one commit per close (8 blocks < the 1 MiB commit threshold): the whole file is
        # at one generation, the documented whole-file guarantee
        assert len(gens) == 1, (k, gens)
        small = (plain / f"s{k}").read_bytes()
        assert small == b"" or small.startswith(b"small %d gen " % k)


def _torn(box: EncBox) -> Path:
    """/data/t committed at gen 1, then a gen-2 commit torn by a crash: its journal is
    complete, and only the first half of its in-place write reached the file."""
    from enarx.encdir import fileformat
    from enarx.encdir.keys import DirKeys

    assert box.ok("fill", "/data/t", "7", "4", "1") == ["ok"]
    (host,) = box.data_files()
    old = host.read_bytes()
    assert box.ok("fill", "/data/t", "7", "4", "2") == ["ok"]
    new = host.read_bytes()
    assert len(new) == len(old) and not list(box.host.glob("*.j"))
    start = fileformat.PREFIX_SIZE
    journal = fileformat.build_journal(DirKeys.derive(box.key.read_bytes()).journal,
                                       new[8:start], len(new), [(start, new[start:])])
    half = start + (len(new) - start) // 2
    host.write_bytes(old[:start] + new[start:half] + old[half:])
    host.with_name(host.name + ".j").write_bytes(journal)
    return host


def test_a_commit_torn_by_a_crash_is_readable_read_only(enarx: RunEnarx, tmp_path: Path) -> None:
    box = EncBox(enarx, tmp_path)
    host = _torn(box)
    want = [f"open 0 {4 * BLOCK}"] + [f"b{i} 0 7 {i} 2" for i in range(4)]
    # a read-only pre-open and `enarx dir decrypt` (read-only too) see the committed state
    rc, out, err = box.run("check", "/data/t", ro=True)
    assert rc == 0 and out == want, (out, err)
    r = enarx("dir", "decrypt", box.host, tmp_path / "plain", "--key", box.key)
    assert r.returncode == 0, r.stderr.decode()
    data = (tmp_path / "plain" / "t").read_bytes()
    assert data == b"".join(b"%04x%04x%08x" % (7, i, 2) * (BLOCK // 16) for i in range(4))
    # a read-write open replays the journal into the file and removes it
    assert box.ok("check", "/data/t") == want
    assert not host.with_name(host.name + ".j").exists()
