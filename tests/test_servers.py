"""tests.servers: a server that cannot start is reported with its log and leaves no process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import ServerProcess, clean_env


def test_a_server_that_cannot_listen_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)registry exited:.*cannot listen") as info:
        ServerProcess("registry", ["--state-dir", str(tmp_path), "--insecure-http",
                                   "--addr", "203.0.113.1"], clean_env())
    assert "Traceback" not in str(info.value)


def test_a_started_server_has_a_url_and_stops_cleanly(tmp_path: Path) -> None:
    s = ServerProcess("registry", ["--state-dir", str(tmp_path), "--insecure-http"], clean_env())
    try:
        assert s.url.startswith("http://127.0.0.1:") and s.proc.poll() is None
        assert s.events("listening") == [{"event": "listening", "url": s.url}]
    finally:
        assert s.stop() == 0  # SIGTERM: a clean exit, not death by the signal
    assert s.proc.poll() == 0
