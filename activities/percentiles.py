"""Percentiles from Cloud Monitoring distributions: bucket counts merged across
points and series, the rank found by linear interpolation inside its bucket
(as Prometheus's histogram_quantile does)."""

from __future__ import annotations

from collections.abc import Iterable

from google.api import distribution_pb2


def bucket_bounds(
    options: distribution_pb2.Distribution.BucketOptions, n: int
) -> list[tuple[float, float]]:
    """(lower, upper) of each of n buckets; the overflow bucket's upper is its lower."""
    if options.HasField("explicit_buckets"):
        b = list(options.explicit_buckets.bounds)
        edges = [
            (
                b[i - 1] if i > 0 else min(0.0, b[0]) if b else 0.0,
                b[i] if i < len(b) else (b[-1] if b else 0.0),
            )
            for i in range(len(b) + 1)
        ]
    elif options.HasField("exponential_buckets"):
        e = options.exponential_buckets
        edge = [e.scale * e.growth_factor**i for i in range(e.num_finite_buckets + 1)]
        edges = (
            [(0.0, edge[0])]
            + [(edge[i - 1], edge[i]) for i in range(1, e.num_finite_buckets + 1)]
            + [(edge[-1], edge[-1])]
        )
    elif options.HasField("linear_buckets"):
        lin = options.linear_buckets
        edge = [lin.offset + lin.width * i for i in range(lin.num_finite_buckets + 1)]
        edges = (
            [(min(0.0, edge[0]), edge[0])]
            + [(edge[i - 1], edge[i]) for i in range(1, lin.num_finite_buckets + 1)]
            + [(edge[-1], edge[-1])]
        )
    else:
        edges = []
    return (edges + [edges[-1] if edges else (0.0, 0.0)] * n)[:n]


def distribution_percentile(
    distributions: Iterable[distribution_pb2.Distribution], q: float
) -> float | None:
    """The q-th percentile over all the distributions' samples; None without samples."""
    counts: list[int] = []
    options = None
    total = 0
    weighted_mean = 0.0
    for d in distributions:
        if not d.count:
            continue
        total += d.count
        weighted_mean += d.mean * d.count
        if d.bucket_counts:
            options = options or d.bucket_options
            counts = [
                a + b
                for a, b in zip(
                    counts + [0] * (len(d.bucket_counts) - len(counts)),
                    list(d.bucket_counts) + [0] * (len(counts) - len(d.bucket_counts)),
                    strict=True,
                )
            ]
    if not total:
        return None
    if options is None or not sum(counts):
        return weighted_mean / total  # no buckets: the mean is all there is
    rank = q / 100 * sum(counts)
    seen = 0
    for (lower, upper), n in zip(bucket_bounds(options, len(counts)), counts, strict=True):
        if n and seen + n >= rank:
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return bucket_bounds(options, len(counts))[-1][0]
