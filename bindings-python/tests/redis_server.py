"""``redis-server`` processes for the tests: a single node on a free loopback port, started
with no persistence and stopped when the test session ends. A test that needs Redis fails — it
never skips — when ``redis-server`` cannot be started (``make test`` installs it when missing).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free when asked; the server binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A running ``redis-server`` on 127.0.0.1."""

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix=f"floodwall-py-redis-{self.port}-")
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: apt-get install redis-server (make test does)"
            )
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self, *args: str) -> object:
        """Sends one command over a fresh connection and returns the decoded reply (simple
        strings, integers, bulk strings, arrays of those)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            payload = f"*{len(args)}\r\n" + "".join(
                f"${len(a.encode())}\r\n{a}\r\n" for a in args
            )
            s.sendall(payload.encode())
            reader = s.makefile("rb")
            return _read_reply(reader)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _read_reply(reader: "os.PathLike[bytes] | object") -> object:
    line = reader.readline()  # type: ignore[attr-defined]
    if not line:
        raise OSError("connection closed")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis error: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = reader.read(n + 2)  # type: ignore[attr-defined]
        return data[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(reader) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")
