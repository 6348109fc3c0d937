"""Shared benchmark helpers: build mode and machine in every record, and an
interleaved A/B timer for ratios that survive a noisy shared machine."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

import wsgishield


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


MACHINE = {
    "cpu": _cpu_model(),
    "python": platform.python_version(),
    "compiled_kernels": wsgishield.HAS_EXTENSIONS,
}


@pytest.fixture(autouse=True)
def _record_machine(request: pytest.FixtureRequest) -> None:
    if "benchmark" in request.fixturenames:
        benchmark = request.getfixturevalue("benchmark")
        benchmark.extra_info.update(MACHINE)


def interleaved(
    variants: dict[str, Callable[[], Any]], rounds: int = 21, number: int = 2000
) -> dict[str, float]:
    """Time each variant in alternating rounds; return median seconds per call.

    Alternating the variants round by round exposes them to the same noise
    from the other core, so their ratio is steadier than that of two
    separate runs.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, function in variants.items():
            start = time.perf_counter()
            for _ in range(number):
                function()
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, medians: dict[str, float], baseline: str) -> str:
    """Format medians in microseconds and their ratio to ``baseline``."""
    base = medians[baseline]
    lines = [f"{title} (median per call, ratio to {baseline})"]
    for name, value in medians.items():
        lines.append(f"  {name:<34} {value * 1e6:9.3f} us  x{value / base:6.2f}")
    return "\n".join(lines)
