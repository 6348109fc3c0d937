"""Start and stop real ``redis-server`` and Gunicorn processes for tests.

Every server listens on 127.0.0.1 on a free port and is ended by PID, so a
test may kill, pause or restart it without touching anything else.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def _gunicorn_has_control_socket() -> bool:
    try:
        from gunicorn import version_info
    except ImportError:
        return False
    return tuple(version_info[:2]) >= (25, 1)


# Gunicorn 25.1+ opens a control socket at one per-user path; tests run
# several instances at once, so they turn it off.
_GUNICORN_HAS_CONTROL_SOCKET = _gunicorn_has_control_socket()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Send SIGTERM, then SIGKILL after ``timeout`` seconds, and reap the process."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, nothing on disk."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; run the README test command"
            )
        self.binary = binary
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="wsgishield-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Stop the process with SIGSTOP: connections open, but no reply comes."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class GunicornServer:
    """Gunicorn serving a WSGI app on a free loopback port."""

    def __init__(
        self,
        app: str,
        *,
        config: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        cwd: Path = REPOSITORY,
    ) -> None:
        self.app = app
        self.config = config
        self.workers = workers
        self.env = {**os.environ, **(env or {})}
        self.extra_args = list(extra_args)
        self.cwd = cwd
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(
            tempfile.mkstemp(prefix="wsgishield-gunicorn-", suffix=".log")[1]
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GunicornServer:
        command = [sys.executable, "-m", "gunicorn"]
        if self.config:
            command += ["--config", self.config]
        if _GUNICORN_HAS_CONTROL_SOCKET:
            command.append("--no-control-socket")
        command += [
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            *self.extra_args,
            self.app,
        ]
        self.env.setdefault("PYTHONPATH", str(REPOSITORY))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=30, process=self.process)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            # Gunicorn's graceful_timeout is 30 s; killing the arbiter sooner
            # would skip its on_exit hook, which removes shared-memory tables.
            stop_process(self.process, timeout=35)
            self.process = None
        self.log_path.unlink(missing_ok=True)
