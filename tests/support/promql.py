"""Just enough PromQL to evaluate the shipped alert rules against one ``/metrics`` scrape.

Covered: selectors with ``=``, ``!=``, ``=~``, ``!~`` matchers, ``sum`` (with ``by``), ``rate`` and
``increase`` (one scrape is a constant series: both are 0), ``*`` by a number, and comparisons
(``==``, ``!=``, ``>``, ``<``, ``>=``, ``<=``) that filter like PromQL's. ``up`` is 1 for the scraped
target. Like PromQL, ``sum`` of nothing is nothing, so a selector that matches no series never
fires: that is the bug the state-name test exists for. Unknown syntax raises.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]
Sample = tuple[str, dict[str, str], float]

TOKEN = re.compile(r'\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<dur>\[\d+[smhd]\])'
                   r'|(?P<op>==|!=|>=|<=|=~|!~|[(){},*<>=])|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*))')
COMPARE = {"==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
           ">=": operator.ge, "<=": operator.le}


def scrape_samples(exposition: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (what ``/metrics`` answers)."""
    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(exposition) for s in family.samples]


def evaluate(expr: str, samples: Iterable[Sample], target: dict[str, str] | None = None) -> Vector:
    """The instant vector ``expr`` gives on this scrape (an alert fires for each element)."""
    parser = _Parser(expr, list(samples), target or {})
    result = parser.expression()
    if parser.peek() is not None:
        raise ValueError(f"unparsed PromQL after {parser.position}: {expr[parser.position:]!r}")
    if isinstance(result, float):
        raise ValueError(f"{expr!r} is a scalar, not a vector")
    return result


class _Parser:
    def __init__(self, text: str, samples: list[Sample], target: dict[str, str]) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while text[position:].strip():
            match = TOKEN.match(text, position)
            if match is None:
                raise ValueError(f"cannot read PromQL at {position}: {text[position:]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind), match.end()))
            position = match.end()
        self.index = 0
        self.position = 0
        self.samples = samples
        self.target = target

    def peek(self) -> str | None:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.index >= len(self.tokens):
            raise ValueError(f"PromQL ends early (wanted {expected!r})")
        kind, value, end = self.tokens[self.index]
        if expected is not None and value != expected:
            raise ValueError(f"wanted {expected!r}, got {value!r}")
        self.index += 1
        self.position = end
        return kind, value

    def expression(self) -> Vector | float:
        left = self.product()
        if self.peek() in COMPARE:
            compare = COMPARE[self.take()[1]]
            right = self.product()
            return _compare(left, right, compare)
        return left

    def product(self) -> Vector | float:
        value = self.factor()
        while self.peek() == "*":
            self.take("*")
            other = self.factor()
            value = _multiply(value, other)
        return value

    def factor(self) -> Vector | float:
        kind, value = self.take()
        if kind == "num":
            return float(value)
        if value == "(":
            inner = self.expression()
            self.take(")")
            return inner
        if kind != "name":
            raise ValueError(f"unexpected {value!r}")
        if value == "sum":
            by: list[str] = []
            if self.peek() == "by":
                self.take("by")
                by = self.names()
            self.take("(")
            inner = self.expression()
            self.take(")")
            if isinstance(inner, float):
                raise ValueError("sum of a scalar")
            return _sum(inner, by)
        if value in ("rate", "increase"):
            self.take("(")
            series = self.selector(self.take()[1])
            kind, _ = self.take()
            if kind != "dur":
                raise ValueError(f"{value} needs a range [..]")
            self.take(")")
            return {labels: 0.0 for labels in _drop_name(series)}
        return self.selector(value)

    def names(self) -> list[str]:
        self.take("(")
        names = [self.take()[1]]
        while self.peek() == ",":
            self.take(",")
            names.append(self.take()[1])
        self.take(")")
        return names

    def selector(self, name: str) -> Vector:
        matchers: list[tuple[str, str, str]] = []
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label = self.take()[1]
                op = self.take()[1]
                kind, quoted = self.take()
                if kind != "str" or op not in ("=", "!=", "=~", "!~"):
                    raise ValueError(f"bad matcher {label}{op}{quoted}")
                matchers.append((label, op, quoted[1:-1]))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        if name == "up":
            candidates: list[Sample] = [("up", dict(self.target), 1.0)]
        else:
            candidates = [s for s in self.samples if s[0] == name]
        found: Vector = {}
        for sample_name, labels, value in candidates:
            every = {**labels, "__name__": sample_name}
            if all(_matches(every.get(label, ""), op, wanted) for label, op, wanted in matchers):
                found[tuple(sorted(every.items()))] = value
        return found


def _matches(value: str, op: str, wanted: str) -> bool:
    if op == "=":
        return value == wanted
    if op == "!=":
        return value != wanted
    full = re.fullmatch(wanted, value) is not None  # PromQL regexes are anchored
    return full if op == "=~" else not full


def _drop_name(vector: Vector) -> Vector:
    return {tuple(item for item in labels if item[0] != "__name__"): value
            for labels, value in vector.items()}


def _sum(vector: Vector, by: list[str]) -> Vector:
    groups: Vector = {}
    for labels, value in vector.items():
        key = tuple(item for item in labels if item[0] in by)
        groups[key] = groups.get(key, 0.0) + value
    return groups


def _multiply(left: Vector | float, right: Vector | float) -> Vector | float:
    if isinstance(left, float) and isinstance(right, float):
        return left * right
    if isinstance(left, float):
        left, right = right, left
    if not isinstance(right, float):
        raise ValueError("vector * vector is not covered")
    return {labels: value * right for labels, value in _drop_name(left).items()}


def _compare(left: Vector | float, right: Vector | float, compare) -> Vector:
    if isinstance(left, float):
        raise ValueError("a comparison needs a vector on the left")
    if isinstance(right, float):
        return {labels: value for labels, value in left.items() if compare(value, right)}
    right_by_labels = _drop_name(right)
    return {labels: value for labels, value in _drop_name(left).items()
            if labels in right_by_labels and compare(value, right_by_labels[labels])}


def alert_rules(rules_file) -> dict[str, str]:
    """``alert name → expr`` of a Prometheus rules file."""
    import yaml

    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}
