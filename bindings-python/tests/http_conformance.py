"""The HTTP conformance cases (``tests/http/``, format in its README) for the Python
middlewares: the loader, the checks and the transcript of the reference runner
(``tests/support/http.rs``: ``request_lines``, ``cost_of``, ``transcript_headers``,
``check``), the application every host runs behind the middleware, and a client that writes
each request itself, the target exactly as the case has it, on one kept-alive connection.
"""

from __future__ import annotations

import json
import math
import socket
from dataclasses import dataclass
from typing import Any, Optional

from conftest import REPO

CASES_DIR = REPO / "tests" / "http"
TRANSCRIPTS = REPO / "target" / "http-conformance"
REQUEST_TIMEOUT_S = 10.0

Observed = dict[str, Any]
"""What a client saw of one response: ``status``, ``headers`` (see
:func:`transcript_headers`) and ``body``."""


def load_cases() -> list[tuple[str, dict[str, Any]]]:
    """Every case as (file name, case), files in name order."""
    cases = []
    for path in sorted(CASES_DIR.glob("*.json")):
        if path.name == "tokens.json":
            continue
        doc = json.loads(path.read_text())
        assert doc["format"] == 1, path
        cases.extend((path.name, case) for case in doc["cases"])
    return cases


@dataclass(frozen=True)
class Tokens:
    """``tokens.json``: the ``[auth]`` section verifying the tokens, and the tokens by name."""

    auth: dict[str, Any]
    tokens: dict[str, str]


def load_tokens() -> Tokens:
    doc = json.loads((CASES_DIR / "tokens.json").read_text())
    return Tokens(auth=doc["auth"], tokens=doc["tokens"])


def case_config(
    case: dict[str, Any], tokens: Tokens, store: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    """A case's engine configuration: ``"auth": "suite"`` resolved, and ``store`` added when
    the case has none."""
    config = dict(case["config"])
    if config.get("auth") == "suite":
        config["auth"] = tokens.auth
    if store is not None and "store" not in config:
        config["store"] = store
    return config


def request_lines(step: dict[str, Any], tokens: Tokens) -> list[tuple[str, str]]:
    """The header lines sent for a step (name, value): the case's headers by name (a list is
    one line per item), the token, and the application's instructions."""
    lines = []
    headers = step["request"].get("headers", {})
    for name in sorted(headers):
        value = headers[name]
        for line in value if isinstance(value, list) else [value]:
            lines.append((name, line))
    token = step["request"].get("token")
    if token is not None:
        lines.append(("Authorization", f"Bearer {tokens.tokens[token]}"))
    app = step.get("app", {})
    if app.get("status") is not None:
        lines.append(("X-Test-Status", str(app["status"])))
    if app.get("charge") is not None:
        lines.append(("X-Test-Charge", app["charge"]))
    return lines


def header_cost(value: Optional[str]) -> float:
    """The cost function every runner's middleware is given: ``X-Test-Cost`` as a number
    (1 without it; text that is no number is NaN)."""
    if value is None:
        return 1.0
    try:
        return float(value.strip())
    except ValueError:
        return math.nan


_FLOODWALL_HEADERS = frozenset(
    {
        "ratelimit-policy",
        "ratelimit",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "retry-after",
        "www-authenticate",
        "x-test-reached",
        "x-test-subject",
        "x-test-role",
        "x-ratelimit-cost",
    }
)


def transcript_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The headers a transcript keeps, by lower-case name: floodwall's, the application's test
    headers, and — on an answer floodwall gave — its content headers."""
    lowered = [(name.lower(), value) for name, value in headers]
    reached = any(name == "x-test-reached" for name, _ in lowered)
    kept = {}
    for name, value in lowered:
        if name in _FLOODWALL_HEADERS or (
            not reached and name in ("content-type", "content-length")
        ):
            kept[name] = value
    return kept


def check(expect: dict[str, Any], observed: Observed) -> list[str]:
    """What is wrong with ``observed`` against ``expect`` (empty when nothing)."""
    wrong = []
    if observed["status"] != expect["status"]:
        wrong.append(f"status {observed['status']} (want {expect['status']})")
    reached = "x-test-reached" in observed["headers"]
    if reached != expect["reached"]:
        wrong.append(f"reached {reached} (want {expect['reached']})")
    code = expect.get("code")
    if code is not None:
        try:
            body = json.loads(observed["body"])
            got = body.get("code") if isinstance(body, dict) else None
        except ValueError:
            got = None
        if got != code:
            wrong.append(f"code {got!r} (want {code!r})")
    body = expect.get("body")
    if body is not None and observed["body"] != body:
        wrong.append(f"body {observed['body']!r} (want {body!r})")
    for name, want in expect.get("headers", {}).items():
        got = observed["headers"].get(name.lower())
        if got != want:
            wrong.append(f"header {name}: {got!r} (want {want!r})")
    for name, key in (("x-test-subject", "subject"), ("x-test-role", "role")):
        want = expect.get(key)
        if want is not None and observed["headers"].get(name) != want:
            wrong.append(f"{name}: {observed['headers'].get(name)!r} (want {want!r})")
    return wrong


def write_transcript(runner: str, transcript: dict[str, list[Observed]]) -> None:
    """Writes ``target/http-conformance/<runner>.json`` for ``compare.py``."""
    TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
    doc = {"runner": runner, "cases": transcript}
    (TRANSCRIPTS / f"{runner}.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def echo(
    method: str, header: Any, identity: Any
) -> tuple[int, dict[str, str], str]:
    """The application of the README: its status, headers and body (none to ``HEAD``, none
    with 204 or 304) for a request whose header values ``header(name)`` answers,
    ``identity`` the caller the middleware verified (or ``None``)."""
    headers = {
        "X-Test-Reached": "1",
        "X-Test-Subject": identity.subject if identity is not None else "-",
        "X-Test-Role": (identity.role or "-") if identity is not None else "-",
    }
    charge = header("x-test-charge")
    if charge is not None:
        headers["X-RateLimit-Cost"] = charge
    status = int(header("x-test-status") or 200)
    body = "" if method == "HEAD" or status in (204, 304) else "ok"
    return status, headers, body


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""The methods the application answers."""

TEXT = "text/plain; charset=utf-8"

_MAX_LINES = 1_000
_MAX_CHUNKS = 100_000


class RawClient:
    """Writes requests itself — the request line with the target exactly as given, the header
    lines as given, ``Host`` and ``Content-Length: 0`` — on one kept-alive connection, opening
    a new one only when the server closed the last (werkzeug's server closes every one)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: Optional[socket.socket] = None
        self._reader: Any = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    def send(
        self, method: str, target: str, lines: list[tuple[str, str]]
    ) -> tuple[int, list[tuple[str, str]], str]:
        """Sends one request and reads its response: status, header lines, body (none for a
        ``HEAD``)."""
        if self._sock is None:
            self._sock = socket.create_connection(
                ("127.0.0.1", self._port), timeout=REQUEST_TIMEOUT_S
            )
            self._reader = self._sock.makefile("rb")
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in lines)
        head += "Content-Length: 0\r\n\r\n"
        self._sock.sendall(head.encode("latin-1"))

        status_line = self._line()
        version, status_text = status_line.split(" ", 2)[:2]
        status = int(status_text)
        headers = []
        for _ in range(_MAX_LINES):
            line = self._line()
            if not line:
                break
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        else:
            raise AssertionError("too many header lines")
        fields = {name.lower(): value for name, value in headers}
        if method == "HEAD" or status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in fields:
            body = self._exactly(int(fields["content-length"]))
        else:
            body = self._reader.read()
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close" or version == "HTTP/1.0":
            self.close()
        return status, headers, body.decode()

    def _line(self) -> str:
        line: bytes = self._reader.readline(65_536)
        if not line.endswith(b"\n"):
            raise AssertionError(f"the connection ended in a line: {line!r}")
        return line.decode("latin-1").rstrip("\r\n")

    def _exactly(self, n: int) -> bytes:
        data: bytes = self._reader.read(n)
        if len(data) != n:
            raise AssertionError(f"the body ended after {len(data)} of {n} bytes")
        return data

    def _chunked(self) -> bytes:
        body = b""
        for _ in range(_MAX_CHUNKS):
            size = int(self._line().split(";")[0], 16)
            if size == 0:
                for _ in range(_MAX_LINES):
                    if not self._line():
                        return body
                raise AssertionError("too many trailer lines")
            body += self._exactly(size)
            self._line()
        raise AssertionError("too many chunks")
