from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
import redis

from tests.support.servers import REPOSITORY, RedisServer

PROCESSES = 4
THREADS = 50


@pytest.mark.redis
@pytest.mark.slow
def test_four_processes_fill_once(shared_redis_server: RedisServer) -> None:
    prefix = "stampede" + uuid.uuid4().hex[:8]
    start = time.time() + 3.0
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.cache_stampede",
                shared_redis_server.url,
                prefix,
                str(start),
                str(THREADS),
            ],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=90)
        assert worker.returncode == 0, err.decode()
        results.extend(json.loads(out))

    with redis.Redis.from_url(shared_redis_server.url) as client:
        calls = client.get(f"{prefix}:app-calls")
    assert len(results) == PROCESSES * THREADS
    assert int(calls or 0) == 1
    assert {status for status, _, _ in results} == {200}
    assert {body for _, body, _ in results} == {'{"call": 1}'}
    assert (
        sum("detail=collapsed" in status for _, _, status in results)
        == PROCESSES * THREADS - 1
    )
