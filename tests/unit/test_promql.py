"""The sandbox's PromQL evaluator against Prometheus's own arithmetic."""

from __future__ import annotations

import math

import pytest

from sandbox.promql import (
    BadQuery,
    Matcher,
    Unsupported,
    bucket_quantile,
    evaluate,
    extrapolated_rate,
    format_value,
    parse,
    parse_duration,
)


def test_rate_extrapolates_to_the_range_edges() -> None:
    # 4 samples 15 s apart, 10 a scrape; the edges are within 1.1 intervals: a full 60 s
    samples = [(105.0, 100.0), (120.0, 110.0), (135.0, 120.0), (150.0, 130.0)]
    assert extrapolated_rate(samples, 100.0, 160.0) == pytest.approx(30 * (60 / 45) / 60)


def test_rate_extrapolates_half_an_interval_past_a_gap() -> None:
    samples = [(130.0, 100.0), (145.0, 110.0)]  # 30 s to the start: more than 1.1 intervals
    assert extrapolated_rate(samples, 100.0, 150.0) == pytest.approx(10 * (27.5 / 15) / 50)


def test_rate_does_not_extrapolate_before_the_counter_was_zero() -> None:
    samples = [(110.0, 1.0), (125.0, 11.0)]  # zero was 1.5 s before the first sample
    assert extrapolated_rate(samples, 100.0, 130.0) == pytest.approx(10 * (15 + 1.5 + 5) / 15 / 30)


def test_rate_counts_a_counter_reset() -> None:
    samples = [(100.0, 50.0), (115.0, 60.0), (130.0, 5.0)]
    assert extrapolated_rate(samples, 100.0, 130.0) == pytest.approx(15 / 30)


def test_rate_needs_two_samples() -> None:
    assert extrapolated_rate([(100.0, 5.0)], 90.0, 120.0) is None


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert bucket_quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * (5 / 10))
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.05)


def test_histogram_quantile_in_the_inf_bucket_is_the_highest_bound() -> None:
    assert bucket_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1
    assert math.isnan(bucket_quantile(0.5, [(0.1, 1.0)]))  # no +Inf bucket
    assert math.isnan(bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))  # no observation


def series(values: dict[tuple, list[tuple[float, float]]]):
    def samples(metric: str, matchers: list[Matcher], after: float, until: float):
        found = {}
        for labels, points in values.items():
            as_dict = dict(labels)
            if as_dict["__name__"] == metric and all(
                m.matches(as_dict.get(m.name, "")) for m in matchers
            ):
                found[labels] = [(t, v) for t, v in points if after < t <= until]
        return found

    return samples


SERIES = series(
    {
        (("__name__", "reqs"), ("code", "200"), ("pod", "a")): [
            (t, t * 3) for t in (15, 30, 45, 60)
        ],
        (("__name__", "reqs"), ("code", "500"), ("pod", "a")): [(t, t) for t in (15, 30, 45, 60)],
        (("__name__", "reqs"), ("code", "200"), ("pod", "b")): [(t, t) for t in (15, 30, 45, 60)],
    }
)


def test_sum_by_and_division() -> None:
    by_code = evaluate(parse('sum by (code)(rate(reqs{pod=~"a|b"}[30s]))'), 60.0, SERIES)
    assert by_code == {(("code", "200"),): pytest.approx(4.0), (("code", "500"),): 1.0}
    ratio = evaluate(
        parse('sum(rate(reqs{code=~"5.."}[30s])) / sum(rate(reqs[30s]))'), 60.0, SERIES
    )
    assert ratio == {(): pytest.approx(0.2)}
    without = evaluate(parse("sum without (pod) (rate(reqs[30s]))"), 60.0, SERIES)
    assert set(without) == {(("code", "200"),), (("code", "500"),)}


def test_division_by_zero_is_nan_or_inf() -> None:
    zero = evaluate(parse('sum(rate(reqs{code="404"}[30s]))'), 60.0, SERIES)
    assert zero == {}  # no such series: an empty vector, not a zero
    assert math.isnan(evaluate(parse("0 / 0"), 0.0, SERIES))  # type: ignore[arg-type]
    assert evaluate(parse("1 / 0"), 0.0, SERIES) == math.inf


@pytest.mark.parametrize(
    ("query", "part"),
    [
        ("avg(rate(reqs[1m]))", "avg()"),
        ("increase(reqs[1m])", "increase()"),
        ("reqs", "'reqs'"),
        ("histogram_quantile(1 - 0.05, rate(reqs[1m]))", "not a number"),
    ],
)
def test_unsupported_parts_are_named(query: str, part: str) -> None:
    with pytest.raises(Unsupported, match=re_escape(part)):
        parse(query)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize(
    "query", ["", "sum(", "rate(reqs[1m]", 'rate(reqs{code~"5"}[1m])', "rate(reqs[0s])", "1 +"]
)
def test_bad_queries(query: str) -> None:
    with pytest.raises(BadQuery):
        parse(query)


def test_durations_and_values() -> None:
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    with pytest.raises(BadQuery):
        parse_duration("10")
    assert [format_value(v) for v in (0.5, 2.0, 1e-05, math.nan, math.inf)] == [
        "0.5",
        "2",
        "0.00001",
        "NaN",
        "+Inf",
    ]
