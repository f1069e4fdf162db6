"""Pre-opened directories in VM Keeps (enarx.vm.shares): virtio-9p shares, through the real CLI
and a real QEMU (TCG here). Two boots in all; everything else runs without one."""

from __future__ import annotations

import base64
import os
import tomllib
from pathlib import Path

import pytest

from enarx.vm.qemu import VmSpec, command_line
from enarx.vm.shares import Share, inner_dir_args, plan, toml_dumps
from tests.cliutil import RunEnarx
from tests.guestbuild import build_c

KVM = ("--backend", "kvm")
NIL = ("--backend", "nil")
VM_TIMEOUT = 600.0


def _vm(vm_env: dict[str, str]) -> dict[str, str]:
    boot = os.environ.get("ENARX_VM_BOOT_TIMEOUT")
    return {**vm_env, **({"ENARX_VM_BOOT_TIMEOUT": boot} if boot else {})}


def _keep_dir(base: Path, key: bytes) -> None:
    """Enarx.toml with a read-write dir and an encrypted dir, both relative to it."""
    from enarx.encdir import EncDir

    base.mkdir()
    (base / "out").mkdir()
    (base / "dir.key").write_bytes(key)
    (base / "dir.key").chmod(0o600)
    EncDir.create(str(base / "enc"), key).close()
    (base / "Enarx.toml").write_text(
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        '[[files]]\nkind = "dir"\nhost = "out"\nguest = "/data"\n'
        '[[files]]\nkind = "dir"\nhost = "enc"\nguest = "/secret"\nname = "vault"\n'
        'encryption_key_file = "dir.key"\n')


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_dirs_work_in_a_vm_keep_as_on_nil(enarx: RunEnarx, vm_env: dict[str, str],
                                         tmp_path: Path) -> None:
    """One boot: an Enarx.toml rw dir, an encrypted dir and a `--dir ...:ro` whose host path
    holds a comma; the guest sees what it sees on nil, byte for byte."""
    wasm = build_c("vm_shares.c")
    ro = tmp_path / "in,put"  # QEMU option values need ',' escaped
    ro.mkdir()
    payload = os.urandom(300_000)
    (ro / "in.bin").write_bytes(payload)
    (ro / "hello.txt").write_text("from the host")
    before = _tree(ro)
    key = os.urandom(32)
    # A read-only encrypted --dir, filled by a nil run first.
    from enarx.encdir import EncDir

    EncDir.create(str(tmp_path / "vault"), key).close()
    (tmp_path / "vault.key").write_bytes(key)
    vault = f"{tmp_path / 'vault'}::/v:enc={tmp_path / 'vault.key'}"
    r = enarx("run", *NIL, "--dir", vault, wasm, "write", "/v/s.txt", "prepared")
    assert r.returncode == 0, r.stderr
    ops = ["cat", "/v/s.txt", "cp", "/in/in.bin", "/data/out.bin", "write", "/in/new", "x",
           "write", "/in/hello.txt", "changed", "cat", "/in/hello.txt",
           "write", "/secret/s.txt", "top secret", "cat", "/secret/s.txt"]
    results = {}
    for name, backend, env in (("nil", NIL, None), ("kvm", KVM, _vm(vm_env))):
        base = tmp_path / name
        _keep_dir(base, key)
        results[name] = enarx("run", *backend, "--wasmcfgfile", base / "Enarx.toml",
                              "--dir", f"{ro}::/in:ro", "--dir", f"{vault}:ro", wasm, *ops,
                              env=env,
                              timeout=VM_TIMEOUT)
    kvm, nil = results["kvm"], results["nil"]
    assert nil.returncode == 0, nil.stderr
    assert kvm.returncode == 0, kvm.stderr
    assert kvm.stdout == nil.stdout  # FD_NAMES, errnos, contents: exactly nil's
    out = kvm.stdout.decode().splitlines()
    assert out[0] == "FD_COUNT=7 FD_NAMES=stdin:stdout:stderr:/data:vault:/in:/v"
    assert out[1] == "cat /v/s.txt 0 prepared"
    assert out[2] == f"cp 0 {len(payload)}"
    assert out[3].startswith("write /in/new ") and out[3] != "write /in/new 0"  # :ro
    assert out[5] == "cat /in/hello.txt 0 from the host"
    assert out[6:] == ["write /secret/s.txt 0", "cat /secret/s.txt 0 top secret"]
    base = tmp_path / "kvm"
    assert (base / "out" / "out.bin").read_bytes() == payload  # on the host, byte-exact
    assert _tree(ro) == before  # the read-only share is untouched
    enc = _tree(base / "enc")
    assert len(enc) > 1 and not any(b"top secret" in v for v in enc.values())
    # The VM wrote real ciphertext: a nil run with the key reads it back.
    again = enarx("run", *NIL, "--dir", f"{base / 'enc'}::/secret:enc={base / 'dir.key'}",
                  wasm, "cat", "/secret/s.txt")
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode().splitlines()[1] == "cat /secret/s.txt 0 top secret"
    assert "Traceback" not in kvm.stderr.decode()


def test_read_only_is_enforced_by_the_host(vm_env: dict[str, str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent told to mount a read-only share read-write (and the inner run given no
    ':ro') still cannot write: QEMU's fsdev is readonly=on."""
    from enarx.vm.launcher import VmRequest, run_in_vm

    for k, v in _vm(vm_env).items():
        monkeypatch.setenv(k, v)
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "keep.txt").write_text("original")
    forgetful = {"mounts": [{"tag": "enarx0", "readonly": False},
                            {"tag": "enarx1", "readonly": False}],
                 "keys": [],
                 "extra": [{"tag": "enarx0", "guest": "/ro", "readonly": False, "key": None},
                           {"tag": "enarx1", "guest": "/rw", "readonly": False, "key": None}]}
    req = VmRequest(wasm=build_c("vm_shares.c").read_bytes(), argv0="vm_shares.wasm",
                    args=("write", "/ro/keep.txt", "changed", "write", "/ro/new", "x",
                          "write", "/rw/new", "x"),
                    extra={"dirs": forgetful},
                    shares=(Share("enarx0", str(ro), readonly=True),
                            Share("enarx1", str(rw), readonly=False)))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e, open(os.devnull, "rb") as i:
        code = run_in_vm(req, warn=lambda _: None, stdin_fd=i.fileno(), stdout_fd=o.fileno(),
                         stderr_fd=e.fileno())
    lines = out.read_text().splitlines()
    assert code == 0, err.read_text()
    erofs = 69  # WASI's ROFS: the guest kernel got EROFS from QEMU
    assert lines[1:] == [f"write /ro/keep.txt {erofs}", f"write /ro/new {erofs}",
                         "write /rw/new 0"]
    assert (ro / "keep.txt").read_text() == "original"
    assert sorted(os.listdir(ro)) == ["keep.txt"]
    assert (rw / "new").read_text() == "x"  # the same run could write its rw share


# --- no boot ---------------------------------------------------------------------------------


def _spec(*shares: Share) -> VmSpec:
    return VmSpec(kernel="k", initrd="i", append="a", agent_socket="/s", console_log="/c",
                  shares=shares)


def test_each_share_is_an_fsdev_and_a_9p_device() -> None:
    argv = command_line("tcg", _spec(Share("enarx0", "/srv/a,b", readonly=True),
                                     Share("enarx1", "/srv/c", readonly=False)))
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    assert fsdevs == ["local,id=fs0,path=/srv/a,,b,security_model=none,readonly=on",
                      "local,id=fs1,path=/srv/c,security_model=none"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert "virtio-9p-pci,fsdev=fs0,mount_tag=enarx0" in devices
    assert "virtio-9p-pci,fsdev=fs1,mount_tag=enarx1" in devices
    assert "-fsdev" not in command_line("tcg", _spec())


def test_plan_shares_each_directory_once_per_access_mode(tmp_path: Path) -> None:
    from enarx.flags import parse_dir_spec

    (tmp_path / "a").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "a")
    dirs = [parse_dir_spec(f"{tmp_path / 'a'}::/x:ro"), parse_dir_spec(f"{link}::/y:ro"),
            parse_dir_spec(f"{tmp_path / 'a'}::/z")]
    with plan(dirs, None) as p:
        assert p.shares == (Share("enarx0", str(tmp_path / "a"), True),
                            Share("enarx1", str(tmp_path / "a"), False))
        assert p.request is not None and p.config is None
        assert inner_dir_args(p.request) == ["--dir", "/mnt/enarx/0::/x:ro",
                                             "--dir", "/mnt/enarx/0::/y:ro",
                                             "--dir", "/mnt/enarx/1::/z"]
    with plan([], None) as p:
        assert p.shares == () and p.request is None


def test_enarx_toml_dirs_are_rewritten_to_mount_points(tmp_path: Path) -> None:
    from enarx import config
    from enarx.workload import identity_of

    (tmp_path / "data").mkdir()
    text = ('args = ["a \\"q\\" \\\\ \\u00e9 \\u0001 \\u007f"]\nenv = { K = "v" }\n'
            '[[files]]\nkind = "stdout"\n'
            '[[files]]\nkind = "dir"\nhost = "data"\nreadonly = true\n'
            '[limits]\nfuel = 10\n')
    source = config.parse(text, path=str(tmp_path / "Enarx.toml"))
    with plan([], source) as p:
        assert p.config is not None
        before, after = tomllib.loads(text), tomllib.loads(p.config)
    before["files"][1].update(host="/mnt/enarx/0", guest="data")
    assert after == before
    assert source.data == tomllib.loads(text)  # the parsed data is rewritten in a copy
    assert p.shares == (Share("enarx0", str(tmp_path / "data"), True),)
    # The workload identity (what a steward pins) is the same before and after.
    assert identity_of(b"m", config.loads(text)) == identity_of(b"m", config.loads(p.config))
    odd = {"f": 1.5, "n": float("-inf"), "b": False, "k y": [{"x": [1, "\u2028"]}]}
    assert tomllib.loads(toml_dumps(odd)) == odd


def test_bad_dirs_are_refused_before_any_boot(enarx: RunEnarx, tmp_path: Path) -> None:
    """Each error names the directory, and QEMU (a stand-in that records being booted) never
    started a VM."""
    fake = tmp_path / "bin" / "qemu-system-x86_64"
    booted = tmp_path / "booted"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "QEMU emulator version 7.2.22" '
                    f'&& exit 0\ntouch {booted}\nexit 1\n')
    fake.chmod(0o755)
    no_qemu = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    wasm = build_c("vm_shares.c")
    (tmp_path / "file").write_text("x")
    (tmp_path / "enc").mkdir()
    (tmp_path / "short.key").write_bytes(b"short")
    cases = [
        (["--dir", f"{tmp_path / 'missing'}::/d"], "does not exist", "hint: create the"),
        (["--dir", f"{tmp_path / 'file'}::/d"], "is not a directory", "hint: --dir"),
        (["--dir", f"{tmp_path / 'enc'}::/d:enc={tmp_path / 'short.key'}"], "holds 5 bytes",
         "hint: a directory key"),
    ]
    for flags, message, hint in cases:
        r = enarx("run", *KVM, *flags, wasm, env=no_qemu)
        err = r.stderr.decode()
        assert r.returncode == 2, err
        assert message in err and hint in err and "Traceback" not in err
        assert not booted.exists()
    (tmp_path / "Enarx.toml").write_text('[[files]]\nkind = "dir"\nhost = "gone"\n')
    r = enarx("run", *KVM, "--wasmcfgfile", tmp_path / "Enarx.toml", wasm, env=no_qemu)
    assert r.returncode == 2
    assert "files[0] (gone): pre-opened directory" in r.stderr.decode()
    assert not booted.exists()


def test_the_host_holds_an_encrypted_dirs_lock_while_the_vm_runs(tmp_path: Path) -> None:
    """A flock inside the VM does not reach the host over 9p, so the launcher holds it."""
    from enarx.encdir import EncDir, EncDirError
    from enarx.flags import parse_dir_spec

    key = os.urandom(32)
    EncDir.create(str(tmp_path / "enc"), key).close()
    (tmp_path / "k").write_bytes(key)
    spec = parse_dir_spec(f"{tmp_path / 'enc'}::/e:enc={tmp_path / 'k'}")
    with plan([spec], None) as p:
        assert p.request is not None
        assert p.request["keys"] == [base64.b64encode(key).decode()]  # sent, never written
        with pytest.raises(EncDirError, match="in use"):
            EncDir.open(str(tmp_path / "enc"), key, readonly=True)
    EncDir.open(str(tmp_path / "enc"), key).close()  # released with the plan
    (tmp_path / "k").write_bytes(os.urandom(32))
    with pytest.raises(EncDirError):  # a wrong key: refused before any boot
        plan([spec], None)
    EncDir.open(str(tmp_path / "enc"), key).close()  # ...and nothing left locked


def test_a_refusal_after_the_shares_are_planned_releases_their_locks(tmp_path: Path) -> None:
    """A port in use is refused after a steward-keyed encrypted dir was locked: the lock goes
    with the refusal, so a long-lived caller of the launcher can open the directory again."""
    import socket
    from types import SimpleNamespace

    from enarx.encdir import EncDir
    from enarx.errors import ResourceError
    from enarx.vm.launcher import run_cli

    key = os.urandom(32)
    EncDir.create(str(tmp_path / "enc"), key).close()
    std = "".join(f'[[files]]\nkind = "{k}"\n\n' for k in ("stdin", "stdout", "stderr"))
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        cfg = tmp_path / "Enarx.toml"
        cfg.write_text(std + '[[files]]\nkind = "dir"\nhost = "enc"\nguest = "/e"\n'
                       'name = "e"\nencryption_key = "owner/keys/dir"\n\n'
                       f'[[files]]\nkind = "listen"\nname = "web"\nprot = "tcp"\n'
                       f'addr = "127.0.0.1"\nport = {port}\n')
        limits = SimpleNamespace(max_memory=4 << 30, timeout=None, fuel=None)
        with pytest.raises(ResourceError, match="cannot forward"):
            run_cli(b"\0asm\1\0\0\0", "m.wasm", str(cfg), dirs=[], args=(), env=[],
                    limits=limits, fd_env=True, steward=None, warn=lambda _: None)
    EncDir.open(str(tmp_path / "enc"), key).close()  # not left locked
