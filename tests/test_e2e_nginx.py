"""End to end: Nginx (deploy/nginx/wsgishield.conf) load-balancing two
Gunicorn instances of the example API, with spoofed forwarding headers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import (
    REPOSITORY,
    GunicornServer,
    free_port,
    stop_process,
    wait_for_port,
)

pytestmark = [pytest.mark.nginx, pytest.mark.gunicorn]

SITE = REPOSITORY / "deploy" / "nginx" / "wsgishield.conf"
CONFIG = str(REPOSITORY / "deploy" / "gunicorn.conf.py")


def nginx_config(directory: Path, port: int, upstreams: list[int]) -> Path:
    """Write a main nginx.conf that includes the deploy site on test ports."""
    site = SITE.read_text()
    site = site.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}")
    site = site.replace("server 127.0.0.1:8000 ", f"server 127.0.0.1:{upstreams[0]} ")
    site = site.replace("server 127.0.0.1:8001 ", f"server 127.0.0.1:{upstreams[1]} ")
    (directory / "site.conf").write_text(site)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir()
    main = directory / "nginx.conf"
    main.write_text(
        f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/site.conf;
}}
"""
    )
    return main


# Nginx and Gunicorn talk over 127.0.0.1, the only trusted proxy; the test
# client connects from 127.0.0.2, an outside address as far as the policy is
# concerned.
POLICY = '[client]\ntrusted_proxies = ["127.0.0.1/32"]\n'
CLIENT_ADDRESS = "127.0.0.2"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[int, list[GunicornServer]]]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed; run the README test command")

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {
        "EXAMPLE_SQLITE_PATH": str(tmp_path / "items.db"),
        "DATABASE_URL": "",
        "EXAMPLE_SHIELD_POLICY": str(policy),
        # Keep the example's generated signing key out of the repository.
        "EXAMPLE_JWT_KEY_FILE": str(tmp_path / "jwt.pem"),
    }
    servers = [
        GunicornServer(
            "app_example.wsgi:app", config=CONFIG, workers=1, env=env
        ).start()
        for _ in range(2)
    ]
    port = free_port()
    config = nginx_config(tmp_path, port, [server.port for server in servers])
    check = subprocess.run(
        [nginx, "-t", "-c", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr

    process = subprocess.Popen(
        [nginx, "-c", str(config), "-g", "daemon off;"], stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process=process)
        yield port, servers
    finally:
        stop_process(process)
        for server in servers:
            server.stop()


def get_json(port: int, path: str, headers: dict[str, str] | None = None) -> Any:
    """GET ``path`` through Nginx from the client address 127.0.0.2."""
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.bind((CLIENT_ADDRESS, 0))
        connection.connect(("127.0.0.1", port))
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def test_spoofed_headers_never_the_client(
    stack: tuple[int, list[GunicornServer]],
) -> None:
    port, _ = stack
    body = get_json(
        port,
        "/whoami",
        {
            "X-Forwarded-For": "198.51.100.7, 127.0.0.1",
            "X-Real-IP": "198.51.100.8",
            "X-Forwarded-Proto": "https",
        },
    )
    assert body["client_ip"] == CLIENT_ADDRESS
    assert body["peer"] == "127.0.0.1"
    assert body["source"] == "x-forwarded-for"
    # Nginx overwrites X-Forwarded-Proto with its own scheme.
    assert body["scheme"] == "http"


def test_client_without_header(stack: tuple[int, list[GunicornServer]]) -> None:
    port, _ = stack
    body = get_json(port, "/whoami")
    assert body["client_ip"] == CLIENT_ADDRESS
    assert body["reason"] is None


def test_load_spread_over_both_instances(
    stack: tuple[int, list[GunicornServer]],
) -> None:
    port, _ = stack
    pids = {get_json(port, "/admin/stats")["pid"] for _ in range(40)}
    assert len(pids) == 2


def test_one_instance_down_still_serves(
    stack: tuple[int, list[GunicornServer]],
) -> None:
    port, servers = stack
    servers[0].stop()
    for _ in range(10):
        assert get_json(port, "/health") == {"status": "ok"}


def test_unknown_host_closed_without_reply(
    stack: tuple[int, list[GunicornServer]],
) -> None:
    port, _ = stack
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            b"GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        )
        assert connection.recv(65536) == b""
