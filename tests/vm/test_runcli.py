"""`enarx run` of a VM Keep reads and parses Enarx.toml once: the workload identity (sim),
the shares, the network and the request all use that one parse. No VM boots here."""

from __future__ import annotations

import builtins
import io
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.guestbuild import build_c


def test_enarx_toml_is_read_and_parsed_once_for_a_vm_keep(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from enarx import config
    from enarx.cli.main import main

    wasm = build_c("vm_net.c")
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "Enarx.toml"
    counts = {"read": 0, "toml": 0, "model": 0}

    def counting(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return real(*args, **kwargs)
        return wrapper

    real_open = builtins.open

    def opener(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)) and Path(file).name == "Enarx.toml":
            counts["read"] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setenv("ENARX_SIM_DIR", str(tmp_path_factory.getbasetemp() / "sim-state"))
    monkeypatch.setenv("ENARX_VM_IMAGE_CACHE", str(tmp_path / "no-image"))
    with socket.create_server(("127.0.0.1", 0)) as holder:  # refused after every plan
        port = holder.getsockname()[1]
        cfg.write_text('args = ["a"]\n'
                       '[[files]]\nkind = "stdout"\n\n'
                       '[[files]]\nkind = "dir"\nhost = "data"\nguest = "/d"\n\n'
                       f'[[files]]\nkind = "listen"\nname = "web"\nprot = "tcp"\n'
                       f'addr = "127.0.0.1"\nport = {port}\n')
        with monkeypatch.context() as m:
            m.setattr(builtins, "open", opener)
            m.setattr(io, "open", opener)  # what Path.read_text opens with
            m.setattr(tomllib, "loads", counting("toml", tomllib.loads))
            m.setattr(config, "from_dict", counting("model", config.from_dict))
            with pytest.raises(SystemExit) as exc:
                main(["run", "--backend", "sim", "--vm", "--wasmcfgfile", str(cfg),
                      str(wasm)])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert f"files[2] (web): cannot forward 127.0.0.1:{port} into the VM Keep" in err
    assert counts == {"read": 1, "toml": 1, "model": 1}
    assert not (tmp_path / "no-image").exists()  # nothing was built or booted
