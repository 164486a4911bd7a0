"""A small PromQL evaluator: the part of the language the `promql` metric
source sends, evaluated the way Prometheus evaluates it.

Understood: `rate(name{matchers}[range])`, `sum [by|without (labels)] (...)`,
`histogram_quantile(q, ...)`, a number, parentheses and the four arithmetic
operators between two vectors (one-to-one on identical label sets) or a
vector and a number. Anything else is refused with `Unsupported`, naming the
part: the sandbox answers 400 bad_data rather than a wrong number.

`rate` is Prometheus's extrapolated rate (counter resets, extrapolation to
the range's edges no further than half a scrape interval or the counter's
zero) and `histogram_quantile` its linear interpolation inside a bucket."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
Vector = dict[Labels, float]
# The samples of the series a selector matches, in (after, until]: series labels -> [(t, v)]
SampleSource = Callable[
    [str, "list[Matcher]", float, float], dict[Labels, list[tuple[float, float]]]
]

_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<string>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')|(?P<op>=~|!~|!=|==|[-+*/(){},=])"
    r"|(?P<range>\[[^\]]*\]))"
)
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev"}


class BadQuery(ValueError):
    """A query Prometheus itself would refuse (a parse error)."""


class Unsupported(ValueError):
    """A valid query using a part of PromQL this evaluator does not compute."""


def parse_duration(text: str) -> float:
    """A Prometheus duration (`30s`, `1m30s`, `500ms`); BadQuery if it is not one."""
    found = _DURATION.match(text.strip())
    if not text.strip() or found is None or not any(found.groups()):
        raise BadQuery(f'not a valid duration string: "{text}"')
    return sum(int(g) * unit for g, unit in zip(found.groups(), _DURATION_UNITS, strict=True) if g)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = re.fullmatch(self.value, value) is not None  # PromQL regexes are anchored
        return hit if self.op == "=~" else not hit


@dataclass
class Node:
    kind: str  # number, rate, sum, quantile, binary
    value: float = 0.0
    metric: str = ""
    matchers: list[Matcher] = field(default_factory=list)
    range_seconds: float = 0.0
    by: tuple[str, ...] | None = None
    without: bool = False
    op: str = ""
    args: list[Node] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            found = _TOKEN.match(text, pos)
            if found is None or found.end() == pos:
                raise BadQuery(f"1:{pos + 1}: parse error: unexpected character {text[pos]!r}")
            kind = found.lastgroup or ""
            self.tokens.append((kind, found.group(kind).strip(), pos + 1))
            pos = found.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text) + 1)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        got_kind, got, pos = self.peek()
        if (value is not None and got != value) or (kind is not None and got_kind != kind):
            want = repr(value) if value is not None else kind
            found = repr(got) if got else "end of input"
            raise BadQuery(f"1:{pos}: parse error: expected {want}, found {found}")
        self.i += 1
        return got

    def parse(self) -> Node:
        if not self.tokens:
            raise BadQuery("1:1: parse error: no expression found in input")
        node = self.additive()
        kind, got, pos = self.peek()
        if kind != "end":
            raise BadQuery(f"1:{pos}: parse error: unexpected {got!r}")
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.peek()[1] in ("+", "-") and self.peek()[0] == "op":
            op = self.take()
            node = Node(kind="binary", op=op, args=[node, self.multiplicative()])
        return node

    def multiplicative(self) -> Node:
        node = self.primary()
        while self.peek()[1] in ("*", "/") and self.peek()[0] == "op":
            op = self.take()
            node = Node(kind="binary", op=op, args=[node, self.primary()])
        return node

    def primary(self) -> Node:
        kind, got, pos = self.peek()
        if kind == "number":
            self.take()
            return Node(kind="number", value=float(got))
        if got == "(":
            self.take("(")
            node = self.additive()
            self.take(")")
            return node
        if kind != "name":
            raise BadQuery(f"1:{pos}: parse error: unexpected {got or 'end of input'!r}")
        if got == "sum":
            return self.aggregation()
        if got in AGGREGATIONS:
            raise Unsupported(f"aggregation {got}() (the sandbox evaluates sum only)")
        if got == "rate":
            self.take()
            self.take("(")
            node = self.matrix_selector()
            self.take(")")
            return node
        if got == "histogram_quantile":
            self.take()
            self.take("(")
            q = self.additive()
            if q.kind != "number":
                raise Unsupported("histogram_quantile with a quantile that is not a number")
            self.take(",")
            inner = self.additive()
            self.take(")")
            return Node(kind="quantile", value=q.value, args=[inner])
        if self.i + 1 < len(self.tokens) and self.tokens[self.i + 1][1] == "(":
            raise Unsupported(
                f"function {got}() (the sandbox evaluates rate, sum and histogram_quantile)"
            )
        self.matrix_selector()  # a bare selector: parse it for its own errors first
        raise Unsupported(
            f"the instant vector selector {got!r} (the sandbox evaluates rate(...[range]) of it)"
        )

    def aggregation(self) -> Node:
        self.take("sum")
        node = Node(kind="sum")
        if self.peek()[1] in ("by", "without"):
            node.by, node.without = self.grouping()
        self.take("(")
        node.args = [self.additive()]
        self.take(")")
        if self.peek()[1] in ("by", "without"):
            if node.by is not None:
                raise BadQuery("parse error: a sum can be grouped only once")
            node.by, node.without = self.grouping()
        return node

    def grouping(self) -> tuple[tuple[str, ...], bool]:
        without = self.take() == "without"
        self.take("(")
        names: list[str] = []
        while self.peek()[1] != ")":
            names.append(self.take(kind="name"))
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return tuple(names), without

    def matrix_selector(self) -> Node:
        metric = self.take(kind="name")
        matchers: list[Matcher] = []
        if self.peek()[1] == "{":
            self.take("{")
            while self.peek()[1] != "}":
                name = self.take(kind="name")
                kind, op, pos = self.peek()
                if op not in ("=", "!=", "=~", "!~"):
                    raise BadQuery(f"1:{pos}: parse error: expected a label matching operator")
                self.take()
                raw = self.take(kind="string")
                value = bytes(raw[1:-1], "utf-8").decode("unicode_escape")
                if op in ("=~", "!~"):
                    try:
                        re.compile(value)
                    except re.error as exc:
                        raise BadQuery(
                            f"parse error: invalid regular expression {value!r}: {exc}"
                        ) from None
                matchers.append(Matcher(name, op, value))
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
        kind, got, pos = self.peek()
        if kind != "range":
            raise Unsupported(
                f"the instant vector selector {metric!r} (the sandbox evaluates rate(...[range]))"
            )
        self.take()
        seconds = parse_duration(got[1:-1])
        if seconds <= 0:
            raise BadQuery(f"1:{pos}: parse error: range must be positive")
        return Node(kind="rate", metric=metric, matchers=matchers, range_seconds=seconds)


def parse(text: str) -> Node:
    """The query's tree; BadQuery for what Prometheus refuses, Unsupported for the rest."""
    return _Parser(text).parse()


def extrapolated_rate(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Prometheus's rate() over the samples in (start, end]; None with fewer than two."""
    if len(samples) < 2:
        return None
    first_t, first_v = samples[0]
    last_t, last_v = samples[-1]
    increase = last_v - first_v
    previous = first_v
    for _, v in samples[1:]:
        if v < previous:  # a counter reset: the counter started again from zero
            increase += previous
        previous = v
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    to_start, to_end = first_t - start, end - last_t
    average = sampled / (len(samples) - 1)
    if increase > 0 and first_v >= 0:
        to_start = min(to_start, sampled * (first_v / increase))  # not before the counter's zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return increase * (interval / sampled) / (end - start)


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile over (upper bound, cumulative count) pairs, as Prometheus does it."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or buckets[-1][0] != math.inf or len(buckets) < 2:
        return math.nan
    counts = [c for _, c in buckets]
    for i in range(1, len(counts)):  # counts are cumulative: a dip is rounding or a late scrape
        counts[i] = max(counts[i], counts[i - 1])
    observations = counts[-1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], counts[b]
    if b > 0:
        start = buckets[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count) if count else start


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


def evaluate(node: Node, at: float, samples: SampleSource) -> Vector | float:
    """The value of the query at time `at`: a vector, or a number for a scalar expression."""
    if node.kind == "number":
        return node.value
    if node.kind == "rate":
        start = at - node.range_seconds
        out: Vector = {}
        for labels, points in samples(node.metric, node.matchers, start, at).items():
            value = extrapolated_rate(points, start, at)
            if value is not None:
                out[tuple(kv for kv in labels if kv[0] != "__name__")] = value
        return out
    if node.kind == "sum":
        inner = evaluate(node.args[0], at, samples)
        if not isinstance(inner, dict):
            raise Unsupported("sum() of a number")
        groups: Vector = {}
        for labels, value in inner.items():
            names = node.by or ()
            key = tuple(
                kv for kv in labels if (kv[0] not in names if node.without else kv[0] in names)
            )
            groups[key] = groups.get(key, 0.0) + value
        return groups
    if node.kind == "quantile":
        inner = evaluate(node.args[0], at, samples)
        if not isinstance(inner, dict):
            raise Unsupported("histogram_quantile() of a number")
        by_series: dict[Labels, list[tuple[float, float]]] = {}
        for labels, value in inner.items():
            le = dict(labels).get("le")
            if le is None:
                continue  # Prometheus ignores series without an le label
            rest = tuple(kv for kv in labels if kv[0] != "le")
            bound = math.inf if le in ("+Inf", "Inf") else float(le)
            by_series.setdefault(rest, []).append((bound, value))
        return {k: bucket_quantile(node.value, v) for k, v in by_series.items()}
    left, right = (evaluate(a, at, samples) for a in node.args)
    if isinstance(left, float) and isinstance(right, float):
        return _arith(node.op, left, right)
    if isinstance(left, float):
        return {k: _arith(node.op, left, v) for k, v in right.items()}  # type: ignore[union-attr]
    if isinstance(right, float):
        return {k: _arith(node.op, v, right) for k, v in left.items()}
    return {k: _arith(node.op, v, right[k]) for k, v in left.items() if k in right}


def format_value(value: float) -> str:
    """A sample value as the Prometheus API writes it (Go's FormatFloat 'f', -1)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    if "e" in text or "E" in text:
        from decimal import Decimal

        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text
