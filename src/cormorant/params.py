"""Stage parameters, declared once.

A stage lists its parameters as :class:`Param` values (as ir_measures' measures list their
``SUPPORTED_PARAMS``). Everything else is derived from that one list: the defaults, the
validation of a value from a pipeline string with a clear message, the string form (only values
that differ from the default are printed), the check when an index is reopened (a build-time
parameter cannot change without a rebuild, a query-time one can), the run cache's identity, and
the help text (``cormorant stages``, the README's stage table).

Example:
    >>> K1 = Param("k1", float, 0.9, "term-frequency saturation", low=0)
    >>> declared = Params(K1, Param("stemmer", str, "english", "Snowball stemmer", nullable=True))
    >>> declared.resolve({"k1": 1}, "bm25")
    {'k1': 1.0, 'stemmer': 'english'}
    >>> declared.resolve({"k1": "abc"}, "bm25")
    Traceback (most recent call last):
    ...
    cormorant.errors.PipelineError: bm25: k1 must be a number, got 'abc'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cormorant.errors import PipelineError

BUILD: Literal["build"] = "build"
QUERY: Literal["query"] = "query"
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class Param:
    """One parameter of a stage.

    Attributes:
        name: as written in a pipeline string (``k1`` in ``bm25(k1=1.2)``).
        type: ``int``, ``float``, ``str`` or ``bool``; an ``int`` is accepted for a ``float``.
        default: the value when none is given (``None`` only with ``nullable``).
        help: one line for ``cormorant stages`` and the README.
        when: ``"build"``: fixed when the index is built (changing it needs a rebuild);
            ``"query"``: may differ each time the index is opened or searched.
        choices: the allowed values, when there is a fixed set.
        low, high: inclusive bounds for numbers.
        nullable: ``none`` is a valid value (e.g. "no stemmer").
        positive: a number must be above zero.
        required: the stage cannot work without it (no default).
        same: build-time only: compares a stored and a requested value when plain equality is
            too strict (a model folder copied elsewhere has the same fingerprint).
        valid: checks a value's form beyond its type (``passages=128/64``); raises
            ``ValueError`` with the reason, which the message to the user carries.
    """

    name: str
    type: type
    default: Any
    help: str
    when: Literal["build", "query"] = QUERY
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    positive: bool = False
    required: bool = False
    same: Callable[[Any, Any], bool] | None = field(default=None, compare=False)
    valid: Callable[[Any], None] | None = field(default=None, compare=False)

    def check(self, value: Any, stage: str) -> Any:
        """``value`` converted to this parameter's type, or a :class:`PipelineError`."""
        if value is None:
            if self.nullable:
                return None
            raise PipelineError(f"{stage}: {self.name} cannot be none")
        value = self._typed(value, stage)
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(str(c) for c in self.choices)
            raise PipelineError(f"{stage}: {self.name} must be one of {shown}, got {value!r}")
        if self.low is not None and value < self.low:
            raise PipelineError(f"{stage}: {self.name} must be at least {self.low:g}, got {value!r}")
        if self.positive and value <= 0:
            raise PipelineError(f"{stage}: {self.name} must be positive, got {value!r}")
        if self.high is not None and value > self.high:
            raise PipelineError(f"{stage}: {self.name} must be at most {self.high:g}, got {value!r}")
        if self.valid is not None:
            try:
                self.valid(value)
            except ValueError as exc:
                raise PipelineError(f"{stage}: {self.name} {exc}") from None
        return value

    def _typed(self, value: Any, stage: str) -> Any:
        wrong = PipelineError(f"{stage}: {self.name} must be {_TYPE_NAMES[self.type]},"
                              f" got {_short(value)}")
        if self.type is bool:
            if isinstance(value, bool):
                return value
            raise wrong
        if isinstance(value, bool):
            raise wrong
        if self.type is int:
            if isinstance(value, int):
                return value
            raise wrong
        if self.type is float:
            if isinstance(value, int | float) and math.isfinite(value):
                return float(value)
            raise wrong
        if self.type is str:
            if isinstance(value, str | int | float):  # a path or name that looks like a number
                return str(value)
            raise wrong
        raise TypeError(f"unsupported parameter type {self.type}")

    def equal(self, stored: Any, asked: Any) -> bool:
        """Whether a requested build-time value matches the stored one."""
        if stored == asked:
            return True
        return self.same is not None and self.same(stored, asked)


class Params(Mapping[str, Param]):
    """A stage's declared parameters, in the order they are printed."""

    def __init__(self, *params: Param) -> None:
        self._by_name = {p.name: p for p in params}
        if len(self._by_name) != len(params):
            raise ValueError("a parameter is declared twice")

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __add__(self, other: Params) -> Params:
        """These parameters followed by ``other``'s; ``other`` wins on a shared name."""
        merged = {**self._by_name, **other._by_name}
        return Params(*merged.values())

    def without(self, *names: str) -> Params:
        return Params(*(p for p in self._by_name.values() if p.name not in names))

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self._by_name.items()}

    def check(self, given: Mapping[str, Any], stage: str) -> dict[str, Any]:
        """``given`` checked and converted, no defaults added.

        Raises:
            PipelineError: an unknown name (the message lists the known ones) or a bad value.
        """
        unknown = sorted(set(given) - set(self._by_name))
        if unknown:
            known = ", ".join(self._by_name) or "no parameters"
            raise PipelineError(f"{stage} does not take {', '.join(unknown)} (it takes: {known})")
        return {name: self._by_name[name].check(value, stage) for name, value in given.items()}

    def resolve(self, given: Mapping[str, Any], stage: str) -> dict[str, Any]:
        """Every parameter's value: ``given`` checked and converted, defaults for the rest."""
        checked = self.check(given, stage)
        for name, p in self._by_name.items():
            if p.required and checked.get(name) is None:
                raise PipelineError(f"{stage} needs {name}=... ({p.help})")
        return {name: checked.get(name, p.default) for name, p in self._by_name.items()}

    def shown(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values that differ from their defaults, in declaration order: the string form."""
        return {name: values[name] for name, p in self._by_name.items()
                if name in values and values[name] != p.default}

    def reopen(self, stored: Mapping[str, Any], asked: Mapping[str, Any], stage: str,
               where: str) -> dict[str, Any]:
        """The values for a stage opened from an index: what it was built with, with the
        query-time values ``asked`` applied.

        Raises:
            PipelineError: ``asked`` changes a build-time value (that needs a rebuild).
        """
        values = self.resolve({k: v for k, v in stored.items() if k in self._by_name}, stage)
        for name, value in self.check(asked, stage).items():
            param = self._by_name[name]
            if param.when == BUILD and not param.equal(values[name], value):
                raise PipelineError(
                    f"index {where} was built with {stage}({name}={_short(values[name])});"
                    f" {name}={_short(value)} would need a rebuild"
                    f" (cormorant index build --pipeline ... --overwrite)")
            values[name] = value
        return values

    def fits(self, stored: Mapping[str, Any], asked: Mapping[str, Any]) -> bool:
        """Whether a stage stored with ``stored`` can be opened with ``asked`` (no build-time
        value changes)."""
        try:
            self.reopen(stored, asked, "stage", "")
        except PipelineError:
            return False
        return True

    def help_rows(self) -> list[tuple[str, str, str, str]]:
        """(name, type and default, when, help) per parameter, for tables."""
        rows = []
        for p in self._by_name.values():
            kind = " | ".join(str(c) for c in p.choices) if p.choices else p.type.__name__
            default = "none" if p.default is None else str(p.default).lower() \
                if isinstance(p.default, bool) else str(p.default)
            rows.append((p.name, f"{kind} = {default}", p.when, p.help))
        return rows


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
