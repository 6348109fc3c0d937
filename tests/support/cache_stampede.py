"""One process of the cross-process stampede test.

Usage: python -m tests.support.cache_stampede REDIS_URL PREFIX START THREADS

Builds a Redis-backed cache in front of a slow app that counts its calls in
Redis, waits until the wall-clock time START, then sends THREADS concurrent
requests for one key. Prints one JSON line: the bodies and statuses seen.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import redis

from tests.cache_helpers import route_table
from tests.support.wsgi import call
from wsgishield.cache.redis import RedisStore
from wsgishield.middleware.cache import CacheMiddleware


def main() -> None:
    url, prefix, start, threads = (
        sys.argv[1],
        sys.argv[2],
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    client = redis.Redis.from_url(url)

    def slow_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        number = client.incr(f"{prefix}:app-calls")
        client.expire(f"{prefix}:app-calls", 60)
        time.sleep(0.5)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"call": number}).encode()]

    cache = CacheMiddleware(
        slow_app,
        routes=route_table({"/hot": {"ttl": 60}}),
        store=RedisStore(redis.Redis.from_url(url), prefix=prefix),
        lock_timeout_ms=10_000,
    )
    results: list[tuple[int, str, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        time.sleep(max(0.0, start - time.time()))
        response = call(cache, "/hot")
        with lock:
            results.append(
                (
                    response.status_code,
                    response.body.decode(),
                    response.header("Cache-Status") or "",
                )
            )

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    print(json.dumps(results))
    client.close()
    cache.store.client.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
