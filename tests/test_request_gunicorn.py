"""Body limits through a real Gunicorn, with raw sockets for hostile framing.

The app (``tests/apps/echo.py``) reports the length and SHA-256 of the body
it read, behind a shield with a 1 MiB limit.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apps.echo import MAX_BODY
from tests.support.servers import GunicornServer

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]

MIB = 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[GunicornServer]:
    # gthread keeps connections alive, so bytes after a body that lies about
    # its length are parsed as the next request.
    gunicorn = GunicornServer(
        "tests.apps.echo:app",
        extra_args=["--worker-class", "gthread", "--threads", "2", "--timeout", "30"],
    ).start()
    try:
        yield gunicorn
    finally:
        gunicorn.stop()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(stream: Any) -> Reply | None:
    """Read one HTTP/1.1 response with a Content-Length body, or None at EOF."""
    status_line = stream.readline()
    if not status_line:
        return None
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return Reply(int(status_line.split()[1]), headers, body)


def exchange(
    server: GunicornServer, request: bytes | Iterator[bytes], replies: int = 1
) -> list[Reply]:
    """Send ``request`` from a thread, half-close, read up to ``replies`` responses."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:

        def send() -> None:
            parts = [request] if isinstance(request, bytes) else request
            try:
                for part in parts:
                    connection.sendall(part)
                connection.shutdown(socket.SHUT_WR)
            except OSError:
                # The server answered early and closed: the reply tells why.
                pass

        sender = threading.Thread(target=send)
        sender.start()
        stream = connection.makefile("rb")
        found = []
        try:
            for _ in range(replies):
                reply = read_reply(stream)
                if reply is None:
                    break
                found.append(reply)
        except (ConnectionResetError, TimeoutError):
            pass
        sender.join(60)
        return found


def chunked_request(
    path: str, size: int, content_type: str = "application/octet-stream"
) -> Iterator[bytes]:
    yield (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    sent = 0
    while sent < size:
        part = min(CHUNK, size - sent)
        yield f"{part:x}\r\n".encode() + pattern(sent, part) + b"\r\n"
        sent += part
    yield b"0\r\n\r\n"


def pattern(offset: int, size: int) -> bytes:
    block = bytes(range(256))
    start = offset % 256
    data = (block[start:] + block * (size // 256 + 2))[:size]
    return data


def sha256_of_pattern(size: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        part = min(CHUNK, size - sent)
        digest.update(pattern(sent, part))
        sent += part
    return digest.hexdigest()


@pytest.mark.parametrize(
    "size", [MAX_BODY - 1, MAX_BODY], ids=["limit-minus-1", "limit"]
)
def test_chunked_within_limit_passes_unchanged(
    server: GunicornServer, size: int
) -> None:
    [reply] = exchange(server, chunked_request("/upload", size))

    assert reply.status == 200
    assert reply.json()["length"] == size
    assert reply.json()["sha256"] == sha256_of_pattern(size)


@pytest.mark.parametrize(
    "size", [MAX_BODY + 1, 50 * MIB], ids=["limit-plus-1", "50-mib"]
)
def test_chunked_over_limit_is_413(server: GunicornServer, size: int) -> None:
    [reply] = exchange(server, chunked_request("/upload", size))

    assert reply.status == 413
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("size", "status"),
    [(MAX_BODY - 1, 200), (MAX_BODY, 200), (MAX_BODY + 1, 413), (50 * MIB, 413)],
    ids=["limit-minus-1", "limit", "limit-plus-1", "50-mib"],
)
def test_flask_chunked_body(server: GunicornServer, size: int, status: int) -> None:
    [reply] = exchange(server, chunked_request("/flask/upload", size))

    assert reply.status == status
    if status == 200:
        assert reply.json()["length"] == size
        assert reply.json()["sha256"] == sha256_of_pattern(size)


@pytest.mark.parametrize(
    "size", [MAX_BODY + 1, 50 * MIB], ids=["limit-plus-1", "50-mib"]
)
def test_chunked_json_over_limit_is_413(server: GunicornServer, size: int) -> None:
    [reply] = exchange(server, chunked_request("/json", size, "application/json"))

    assert reply.status == 413


@pytest.mark.parametrize(
    "size", [MAX_BODY - 1, MAX_BODY], ids=["limit-minus-1", "limit"]
)
def test_sized_within_limit_passes_unchanged(server: GunicornServer, size: int) -> None:
    head = (
        f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    [reply] = exchange(server, iter([head, pattern(0, size)]))

    assert reply.status == 200
    assert reply.json()["sha256"] == hashlib.sha256(pattern(0, size)).hexdigest()


def test_sized_over_limit_is_413_unread(server: GunicornServer) -> None:
    head = (
        f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {50 * MIB}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    # Only the head is sent: the answer must come without waiting for the body.
    [reply] = exchange(server, iter([head]))

    assert reply.status == 413


@pytest.mark.parametrize("path", ["/upload", "/json"])
def test_length_longer_than_body_is_400(server: GunicornServer, path: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()

    replies = exchange(server, head + b"[" + b"1," * 200 + b"1]")

    assert [reply.status for reply in replies] == [400]


def test_length_shorter_than_body_is_framed_then_400(server: GunicornServer) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n"

    replies = exchange(server, head + b"0123456789" + b"SMUGGLED\r\n\r\n", replies=2)

    # The app reads exactly the declared body; the rest is parsed as the next
    # request on the connection, and that is not a valid request.
    assert replies[0].status == 200
    assert replies[0].json()["length"] == 10
    assert [reply.status for reply in replies[1:]] == [400]


def test_length_and_chunked_together_rejected(server: GunicornServer) -> None:
    request = (
        b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )

    replies = exchange(server, request, replies=2)

    assert replies[0].status == 400
    assert all(reply.status != 200 for reply in replies)


def test_json_bomb_is_400_and_worker_survives(server: GunicornServer) -> None:
    bomb = b"[" * 100_000 + b"]" * 100_000
    head = (
        f"POST /json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(bomb)}\r\nConnection: close\r\n\r\n"
    ).encode()
    small = (
        b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nhi"
    )

    [before] = exchange(server, small)
    [reply] = exchange(server, head + bomb)
    [after] = exchange(server, small)

    assert reply.status == 400
    assert after.status == 200
    assert after.json()["pid"] == before.json()["pid"]


@pytest.fixture(scope="module")
def small_stack_server() -> Iterator[GunicornServer]:
    gunicorn = GunicornServer(
        "tests.apps.echo:app",
        config="python:tests.apps.small_stack",
        extra_args=["--worker-class", "gthread", "--threads", "2", "--timeout", "30"],
    ).start()
    try:
        yield gunicorn
    finally:
        gunicorn.stop()


def test_json_bomb_with_128k_thread_stack(small_stack_server: GunicornServer) -> None:
    bomb = b"[" * 100_000 + b"]" * 100_000
    head = (
        f"POST /json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(bomb)}\r\nConnection: close\r\n\r\n"
    ).encode()
    valid = b'[[1, 2], {"a": [3]}]'
    small = (
        f"POST /json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(valid)}\r\nConnection: close\r\n\r\n"
    ).encode() + valid

    [before] = exchange(small_stack_server, small)
    [reply] = exchange(small_stack_server, head + bomb)
    [after] = exchange(small_stack_server, small)

    assert before.json()["stack_size"] == 128 * 1024
    assert reply.status == 400
    assert after.status == 200
    assert after.json()["pid"] == before.json()["pid"]


def test_spoofed_forwarded_proto_gets_no_hsts() -> None:
    # With the project's Gunicorn settings, Gunicorn does not rewrite
    # wsgi.url_scheme from X-Forwarded-Proto, and the echo app's policy
    # trusts no proxy, so a loopback client claiming https stays on http.
    gunicorn = GunicornServer(
        "tests.apps.echo:app",
        config="deploy/gunicorn.conf.py",
        env={"WEB_CONCURRENCY": "1", "WSGISHIELD_THREADS": "1"},
    ).start()
    try:
        request = (
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
            b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\nhi"
        )
        [reply] = exchange(gunicorn, request)
    finally:
        gunicorn.stop()

    assert reply.status == 200
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in reply.headers
