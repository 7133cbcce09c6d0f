"""The string form of pipelines, parsed without ``eval``.

Grammar (precedence as in Python: ``*`` and ``%`` bind tighter than ``+``, then ``>>``)::

    pipeline := sum (">>" sum)*
    sum      := term ("+" term)*
    term     := NUMBER "*" term | atom (("%" INT) | ("*" NUMBER))*
    atom     := NAME ["(" [arg ("," arg)*] ")"] | "(" pipeline ")"
    arg      := NAME "=" VALUE | pipeline

A keyword value runs to the next ``,`` or ``)``, so paths need no quotes:
``dense(model=/models/my model)``; quote a value that holds ``,`` or ``)``.

Example:
    >>> str(parse("rrf(bm25, dense(model=/m/x)) % 100"))
    'rrf(bm25, dense(model=/m/x)) % 100'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cormorant.errors import PipelineError

Value = str | int | float | bool | None


@dataclass
class Leaf:
    """A named stage with keyword parameters: ``dense(model=PATH)``."""

    name: str
    params: dict[str, Value] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={_show(v)}' for k, v in self.params.items())})"


@dataclass
class Call:
    """A stage over other stages: ``rrf(bm25, dense, k=60)``."""

    name: str
    args: list[Spec]
    params: dict[str, Value] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [str(a) for a in self.args] + [f"{k}={_show(v)}" for k, v in self.params.items()]
        return f"{self.name}({', '.join(parts)})"


@dataclass
class Then:
    first: Spec
    second: Spec

    def __str__(self) -> str:
        return f"{self.first} >> {self.second}"


@dataclass
class Cutoff:
    stage: Spec
    k: int

    def __str__(self) -> str:
        return f"{_paren(self.stage)} % {self.k}"


@dataclass
class Sum:
    stages: list[Spec]

    def __str__(self) -> str:
        return " + ".join(_paren(s) for s in self.stages)


@dataclass
class Scale:
    stage: Spec
    weight: float

    def __str__(self) -> str:
        return f"{self.weight:g} * {_paren(self.stage)}"


Spec = Leaf | Call | Then | Cutoff | Sum | Scale


def _show(value: Value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and (re.search(r"[,()'\"]", value) or value != value.strip()):
        return repr(value)
    return "none" if value is None else str(value)


def _paren(spec: Spec) -> str:
    return f"({spec})" if isinstance(spec, Then | Sum) else str(spec)


_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
_NUMBER = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")


class _Parser:
    # Deeper nesting than any real pipeline; it stops a hostile string from exhausting the
    # interpreter's recursion limit.
    MAX_NESTING = 64

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.nesting = text, 0, 0

    # Characters of the pipeline shown either side of a parse error, so the message stays one
    # line however long (or hostile) the string is.
    CONTEXT = 30

    def fail(self, message: str) -> PipelineError:
        start, end = max(0, self.pos - self.CONTEXT), self.pos + self.CONTEXT
        before = ("..." if start else "") + self.text[start:self.pos]
        after = self.text[self.pos:end] + ("..." if end < len(self.text) else "")
        head = f"cannot parse pipeline at position {self.pos}: {message}: "
        # One character for one, so the caret stays in its column: no newline splits the line.
        excerpt = "".join(c if c.isprintable() else " " for c in before + after)
        error = PipelineError(head + excerpt)
        error.caret = len(head) + len(before)  # the CLI prints a ^ under this column
        return error

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def accept(self, token: str) -> bool:
        self.skip()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.accept(token):
            found = self.text[self.pos:self.pos + 10] or "end of input"
            raise self.fail(f"expected {token!r}, found {found!r}")

    def match(self, pattern: re.Pattern[str]) -> str | None:
        self.skip()
        m = pattern.match(self.text, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group(0)

    def pipeline(self) -> Spec:
        self.nesting += 1
        if self.nesting > self.MAX_NESTING:
            raise self.fail(f"nested deeper than {self.MAX_NESTING} levels")
        spec = self.sum()
        while self.accept(">>"):
            spec = Then(spec, self.sum())
        self.nesting -= 1
        return spec

    def sum(self) -> Spec:
        stages = [self.term()]
        while self.accept("+"):
            stages.append(self.term())
        return stages[0] if len(stages) == 1 else Sum(stages)

    def term(self) -> Spec:
        start = self.pos
        number = self.match(_NUMBER)
        if number is not None:
            if not self.accept("*"):
                self.pos = start
                raise self.fail("a number must be followed by '* stage'")
            return Scale(self.term(), self.weight(number))
        spec = self.atom()
        while True:
            if self.accept("%"):
                k = self.match(re.compile(r"\d+"))
                if k is None or int(k) < 1:
                    raise self.fail("'%' needs a positive integer cut-off")
                spec = Cutoff(spec, int(k))
            elif self.accept("*"):
                weight = self.match(_NUMBER)
                if weight is None:
                    raise self.fail("'*' needs a number")
                spec = Scale(spec, self.weight(weight))
            else:
                return spec

    def weight(self, number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise self.fail(f"the weight {number[:20]} is not a finite number")
        return value

    def atom(self) -> Spec:
        if self.accept("("):
            spec = self.pipeline()
            self.expect(")")
            return spec
        name = self.match(_NAME)
        if name is None:
            found = self.text[self.pos:self.pos + 10] or "end of input"
            raise self.fail(f"expected a stage name, found {found!r}")
        if not self.accept("("):
            return Leaf(name)
        args: list[Spec] = []
        params: dict[str, Value] = {}
        if not self.accept(")"):
            while True:
                self.argument(args, params)
                if self.accept(")"):
                    break
                self.expect(",")
        return Call(name, args, params) if args else Leaf(name, params)

    def argument(self, args: list[Spec], params: dict[str, Value]) -> None:
        start = self.pos
        key = self.match(_NAME)
        if key is not None and self.accept("="):
            if key in params:
                raise self.fail(f"parameter {key!r} given twice")
            params[key] = self.value()
            return
        self.pos = start
        if params:
            raise self.fail("a stage argument cannot follow keyword arguments")
        args.append(self.pipeline())

    def value(self) -> Value:
        self.skip()
        if self.pos < len(self.text) and self.text[self.pos] in "\"'":
            quote = self.text[self.pos]
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.fail("unterminated quoted value")
            raw = self.text[self.pos + 1:end]
            self.pos = end + 1
            return raw
        end = self.pos
        while end < len(self.text) and self.text[end] not in ",)":
            end += 1
        raw = self.text[self.pos:end].strip()
        if not raw:
            raise self.fail("missing value after '='")
        self.pos = end
        return _literal(raw)


def _literal(raw: str) -> Value:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    if len(raw) > 64:  # no parameter is a number this long; Python refuses huge int strings
        return raw
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if _NUMBER.fullmatch(raw):
        return float(raw)
    return raw


def parse(text: str) -> Spec:
    """Parse a pipeline string into its syntax tree.

    Raises:
        PipelineError: with the position of the first problem.
    """
    if not isinstance(text, str) or not text.strip():
        raise PipelineError("the pipeline is empty")
    parser = _Parser(text)
    spec = parser.pipeline()
    parser.skip()
    if parser.pos != len(text):
        raise parser.fail(f"unexpected {text[parser.pos:parser.pos + 10]!r}")
    return spec


def leaves(spec: Spec) -> list[Leaf]:
    """The named stages of ``spec`` that take no stages, left to right."""
    return [node for node in named(spec) if isinstance(node, Leaf)]


def named(spec: Spec) -> list[Leaf | Call]:
    """Every named stage of ``spec`` (those with and without stages inside), left to right."""
    match spec:
        case Leaf():
            return [spec]
        case Call(args=args):
            return [spec] + [node for a in args for node in named(a)]
        case Then(first=a, second=b):
            return named(a) + named(b)
        case Cutoff(stage=s) | Scale(stage=s):
            return named(s)
        case Sum(stages=stages):
            return [node for s in stages for node in named(s)]
    raise TypeError(spec)


def materialize(spec: Spec, make_leaf: Callable[[Leaf, type], Any]) -> Any:
    """Turn ``spec`` into stages. ``make_leaf(leaf, cls)`` builds or opens each named stage
    that takes no stages (``cls`` is its registered class); a stage over stages
    (``rrf(a, b)``, ``rocchio(dense)``) is made from its already made children."""
    from cormorant import pipeline as p
    from cormorant import registry

    def walk(node: Spec) -> Any:
        match node:
            case Leaf():
                cls = registry.stage_class(node.name)
                if issubclass(cls, p.Composite):
                    raise PipelineError(f"{node.name} works on other stages: {cls.usage}")
                return make_leaf(node, cls)
            case Call():
                cls = registry.stage_class(node.name)
                if not issubclass(cls, p.Composite):
                    raise PipelineError(f"{node.name} takes keyword arguments only, not stages:"
                                        f" {node.name}(key=value)")
                return cls([walk(a) for a in node.args], **node.params)
            case Then(first=a, second=b):
                return p.Then(walk(a), walk(b))
            case Cutoff(stage=s, k=k):
                return p.Cutoff(walk(s), k)
            case Sum(stages=stages):
                return p.CombSUM([walk(s) for s in stages])
            case Scale(stage=s, weight=w):
                return p.Scaled(walk(s), w)
        raise TypeError(node)

    return walk(spec)
