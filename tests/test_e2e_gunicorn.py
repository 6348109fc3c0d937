"""End to end: the example API under real Gunicorn, real HTTP, spoofed headers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import REPOSITORY, GunicornServer

pytestmark = pytest.mark.gunicorn

CONFIG = str(REPOSITORY / "deploy" / "gunicorn.conf.py")


def start_example(tmp_path: Path, policy: str | None = None) -> GunicornServer:
    env = {"EXAMPLE_SQLITE_PATH": str(tmp_path / "items.db"), "DATABASE_URL": ""}
    if policy is not None:
        path = tmp_path / "policy.toml"
        path.write_text(policy)
        env["EXAMPLE_SHIELD_POLICY"] = str(path)
    return GunicornServer(
        "app_example.wsgi:app", config=CONFIG, workers=2, env=env
    ).start()


@pytest.fixture
def example(tmp_path: Path) -> Iterator[GunicornServer]:
    server = start_example(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def strict_example(tmp_path: Path) -> Iterator[GunicornServer]:
    """The example API trusting only 10.0.0.0/8, so the loopback peer is untrusted."""
    server = start_example(tmp_path, '[client]\ntrusted_proxies = ["10.0.0.0/8"]\n')
    try:
        yield server
    finally:
        server.stop()


def raw_request(port: int, head: str) -> tuple[int, bytes]:
    """Send a raw HTTP/1.1 request head and return the status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head.encode("latin-1"))
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


def test_crud_through_gunicorn(example: GunicornServer) -> None:
    session = requests.Session()
    assert session.get(f"{example.url}/health", timeout=10).json() == {"status": "ok"}
    created = session.post(
        f"{example.url}/items", json={"name": "a", "price_cents": 1}, timeout=10
    )
    assert created.status_code == 201
    item_id = created.json()["id"]
    assert (
        session.get(f"{example.url}/items/{item_id}", timeout=10).json()["name"] == "a"
    )


def test_trusted_proxy_header_resolves_client(example: GunicornServer) -> None:
    response = requests.get(
        f"{example.url}/whoami",
        headers={
            "X-Forwarded-For": "198.51.100.7, 203.0.113.50",
            "X-Forwarded-Proto": "https",
        },
        timeout=10,
    )
    body = response.json()
    assert body["client_ip"] == "203.0.113.50"
    assert body["peer"] == "127.0.0.1"
    assert body["scheme"] == "https"
    assert body["route"] == "whoami"


def test_spoofed_headers_from_untrusted_peer(strict_example: GunicornServer) -> None:
    response = requests.get(
        f"{strict_example.url}/whoami",
        headers={
            "X-Forwarded-For": "127.0.0.1",
            "X-Real-IP": "127.0.0.1",
            "CF-Connecting-IP": "1.1.1.1",
            "X-Forwarded-Proto": "https",
        },
        timeout=10,
    )
    body = response.json()
    assert body["client_ip"] == "127.0.0.1"
    assert body["source"] == "peer"
    assert body["scheme"] == "http"


def test_repeated_header_lines_are_one_list(example: GunicornServer) -> None:
    status, body = raw_request(
        example.port,
        "GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-For: 203.0.113.50\r\n\r\n",
    )
    assert status == 200
    assert b'"client_ip":"203.0.113.50"' in body


@pytest.mark.parametrize(
    ("header", "reason"),
    [("unknown", "invalid"), (",", "missing"), ("${jndi:ldap://x/a}", "invalid")],
    ids=["unknown", "comma", "template-injection"],
)
def test_unusable_header_falls_back_to_peer(
    example: GunicornServer, header: str, reason: str
) -> None:
    body = requests.get(
        f"{example.url}/whoami", headers={"X-Forwarded-For": header}, timeout=10
    ).json()
    assert body["client_ip"] == "127.0.0.1"
    assert body["reason"] == reason


def test_oversized_header_never_500(example: GunicornServer) -> None:
    status, _ = raw_request(
        example.port,
        "GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"X-Forwarded-For: {'1.2.3.4,' * 8000}\r\n\r\n",
    )
    # Gunicorn rejects a header line over limit_request_field_size itself
    # (400 before version 23, 431 since).
    assert status in (400, 431)
    assert requests.get(f"{example.url}/health", timeout=10).status_code == 200


def test_unknown_route_is_problem_json(example: GunicornServer) -> None:
    response = requests.get(f"{example.url}/no/such/path", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"


def test_startup_prints_address(example: GunicornServer) -> None:
    assert (
        f"serving app_example.wsgi:app on http://127.0.0.1:{example.port}"
        in example.log()
    )


def test_script_name_header_cannot_move_path(example: GunicornServer) -> None:
    status, _ = raw_request(
        example.port,
        "GET /xwhoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        "SCRIPT_NAME: /x\r\n\r\n",
    )
    # Without forwarder_headers Gunicorn keeps PATH_INFO as sent: no view.
    assert status == 404
