"""Read a metrics registry the way a scrape would, for the metrics tests."""

from __future__ import annotations

from wsgishield import metrics

__all__ = ["SampleKey", "sample_values", "series_names"]

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def sample_values(registry: metrics.MetricsRegistry) -> dict[SampleKey, float]:
    """Return every sample the registry would expose.

    Each key is the sample name and its labels, sorted.
    """
    values: dict[SampleKey, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def series_names(registry: metrics.MetricsRegistry) -> set[SampleKey]:
    return set(sample_values(registry))
