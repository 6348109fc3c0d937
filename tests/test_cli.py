"""The wsgishield command line: check, explain and refresh-cloudflare."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import REPOSITORY
from wsgishield.cli import main
from wsgishield.networks import load_cloudflare_ranges

EXAMPLE_POLICY = str(REPOSITORY / "app_example" / "shield.toml")


@pytest.fixture(autouse=True)
def example_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the HMAC secret that the example policy's issuer names."""
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "cli-test-secret-" + "x" * 32)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), stdout=out)
    return status, out.getvalue()


def test_check_prints_rules() -> None:
    status, output = run("check", EXAMPLE_POLICY)
    assert status == 0
    assert "valid" in output
    assert "route admin: * /admin/**" in output
    assert "trusted proxies loopback" in output


def test_check_invalid_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[client]\nsource = "true-client-ip"\n')
    status, _ = run("check", str(path))
    assert status == 2
    assert "client.source" in capsys.readouterr().err


def test_explain_spoofed_header_from_untrusted_peer() -> None:
    status, output = run(
        "explain",
        EXAMPLE_POLICY,
        "GET",
        "/admin/stats",
        "--peer",
        "203.0.113.66",
        "--header",
        "X-Forwarded-For: 127.0.0.1",
    )
    assert status == 0
    assert "client: 203.0.113.66 (peer 203.0.113.66, source peer)" in output
    assert "route: admin" in output
    # The admin area needs a token, and the request carries none.
    assert "auth: auth-failed (reason missing-token, rule admin)" in output
    assert "response: 401 Unauthorized" in output


def test_explain_trusted_proxy_and_repeated_headers() -> None:
    status, output = run(
        "explain",
        EXAMPLE_POLICY,
        "GET",
        "/items/3?x=1",
        "--peer",
        "127.0.0.1",
        "--header",
        "X-Forwarded-For: 198.51.100.7",
        "--header",
        "X-Forwarded-For: 203.0.113.50",
    )
    assert status == 0
    assert "client: 203.0.113.50" in output
    assert "route: items.read" in output


def test_explain_fallback_reason_shown() -> None:
    _, output = run(
        "explain",
        EXAMPLE_POLICY,
        "GET",
        "/health",
        "--header",
        "X-Forwarded-For: unknown",
    )
    assert "fallback reason invalid" in output


def test_explain_bad_header_argument() -> None:
    status, _ = run("explain", EXAMPLE_POLICY, "GET", "/", "--header", "no-colon")
    assert status == 2


def test_refresh_cloudflare(tmp_path: Path) -> None:
    v4 = tmp_path / "ips-v4"
    v6 = tmp_path / "ips-v6"
    v4.write_text("173.245.48.0/20\n103.21.244.0/22\n")
    v6.write_text("2400:cb00::/32\n")
    output = tmp_path / "cloudflare.txt"
    status, text = run("refresh-cloudflare", str(v4), str(v6), "--output", str(output))
    assert status == 0
    assert "wrote 3 ranges" in text
    assert load_cloudflare_ranges(output) == (
        "173.245.48.0/20",
        "103.21.244.0/22",
        "2400:cb00::/32",
    )


def test_refresh_cloudflare_rejects_wrong_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v4 = tmp_path / "ips-v4"
    v6 = tmp_path / "ips-v6"
    v4.write_text("2400:cb00::/32\n")
    v6.write_text("2400:cb00::/32\n")
    status, _ = run(
        "refresh-cloudflare", str(v4), str(v6), "--output", str(tmp_path / "out")
    )
    assert status == 2
    assert "ips-v4:1" in capsys.readouterr().err


def test_packaged_snapshot_is_valid() -> None:
    ranges = load_cloudflare_ranges()
    assert "173.245.48.0/20" in ranges
    assert "2606:4700::/32" in ranges


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsgishield", "check", EXAMPLE_POLICY],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize(
    ("v4", "v6", "output"),
    [
        ("absent", "ok6", "out"),
        ("ok4", "empty", "out"),
        ("ok4", "ok6", "missing-dir/out"),
    ],
    ids=["missing-input", "empty-list", "missing-output-dir"],
)
def test_refresh_cloudflare_errors_exit_2(
    tmp_path: Path, v4: str, v6: str, output: str
) -> None:
    (tmp_path / "ok4").write_text("173.245.48.0/20\n")
    (tmp_path / "ok6").write_text("2400:cb00::/32\n")
    (tmp_path / "empty").write_text("# nothing\n")
    status, _ = run(
        "refresh-cloudflare",
        str(tmp_path / v4),
        str(tmp_path / v6),
        "--output",
        str(tmp_path / output),
    )
    assert status == 2


@pytest.mark.parametrize(
    ("v4", "v6"),
    [("0.0.0.0/0\n", "2400:cb00::/32\n"), ("173.245.48.0/20\n", "::/0\n")],
    ids=["ipv4-everything", "ipv6-everything"],
)
def test_refresh_cloudflare_rejects_broad_ranges(
    tmp_path: Path, v4: str, v6: str
) -> None:
    (tmp_path / "v4").write_text(v4)
    (tmp_path / "v6").write_text(v6)
    status, _ = run(
        "refresh-cloudflare",
        str(tmp_path / "v4"),
        str(tmp_path / "v6"),
        "--output",
        str(tmp_path / "out"),
    )
    assert status == 2


def test_explain_sends_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "k" * 48)
    status, output = run(
        "explain",
        EXAMPLE_POLICY,
        "POST",
        "/items",
        "--header",
        "Content-Type: application/json",
        "--data",
        '{"name": 1}',
    )
    assert status == 0
    assert "request: invalid (reason schema-mismatch" in output
    assert "response: 422" in output


def test_check_lists_route_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "k" * 48)
    _, output = run("check", EXAMPLE_POLICY)
    assert (
        "route items.write: DELETE,POST,PUT /items/** [request, auth, limits]" in output
    )
