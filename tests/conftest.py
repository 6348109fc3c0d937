from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.support.servers import RedisServer
from wsgishield import _fast


@pytest.fixture(params=["compiled", "python"])
def kernel_mode(request: pytest.FixtureRequest) -> str:
    """Run a test once with each twin; skip the compiled run when extensions are off."""
    mode: str = request.param
    if mode == "compiled" and _fast.NO_EXTENSIONS:
        pytest.skip("WSGISHIELD_NO_EXTENSIONS is set")
    return mode


def load_twin(name: str, mode: str) -> ModuleType:
    """Import kernel ``name`` in ``mode`` ("compiled" or "python") directly."""
    suffix = "c" if mode == "compiled" else "py"
    return importlib.import_module(f"wsgishield._fast._{name}_{suffix}")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for one test, which the test may kill or pause."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def shared_redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session, for tests that never kill it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()
