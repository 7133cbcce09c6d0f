"""Options declared once, as dataclass fields: help text, command-line flag and rule together.

A field made with :func:`option` carries its one-line help, whether it is a command-line flag
(named after the field: ``batch_size`` is ``--batch-size``) and the :class:`Rule` its value
must meet. :func:`checked` converts and checks every field of an instance from that
declaration (a ``Path`` field turns a string into a path because of its type, not its name),
and :func:`command_options` gives a Typer command one option per flagged field, so nothing is
copied by hand between the dataclass and the command line.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Options:
    ...     folder: Path = option(help="Where to write.", cli=True)
    ...     size: int = option(8, help="Rows per batch.", rule=at_least(2))
    ...     def __post_init__(self) -> None:
    ...         checked(self)
    >>> Options("out").folder
    PosixPath('out')
    >>> Options("out", size=1)
    Traceback (most recent call last):
    cormorant.errors.CormorantError: size must be at least 2
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from cormorant.errors import CormorantError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Rule:
    """What a value must meet (``holds``), and what the error says when it does not (``says``,
    after the option's name; ``{value!r}`` is replaced by the value given)."""

    holds: Callable[[Any], bool]
    says: str


def at_least(low: float, why: str = "") -> Rule:
    """The value is ``low`` or more; ``why`` ends the message."""
    return Rule(lambda value: value >= low, f"must be at least {low}{why}")


POSITIVE = Rule(lambda value: value > 0, "must be positive")


def one_of(*choices: str) -> Rule:
    """The value is one of ``choices``."""
    return Rule(lambda value: value in choices,
                f"must be one of {', '.join(choices)}, got {{value!r}}")


def option(default: Any = MISSING, *, help: str, cli: bool = False, short: str | None = None,
           rule: Rule | None = None) -> Any:
    """A dataclass field with its declaration: ``help`` (one line), ``cli`` (also a
    command-line flag, ``--`` + the name in kebab case; ``short`` an extra alias such as
    ``-d``) and ``rule`` (checked by :func:`checked` unless the value is None)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "cli": cli, "short": short, "rule": rule})


def label(field: dataclasses.Field) -> str:
    """How errors name an option: its flag if it has one, else its config-file key."""
    return flag(field.name) if field.metadata.get("cli") else field.name


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def checked(instance: Any) -> None:
    """Convert each field of a dataclass ``instance`` to its declared type (a string to a
    ``Path``) and check its type and rule; a bad value raises a one-line CormorantError."""
    hints = _hints(type(instance))
    for field in dataclasses.fields(instance):
        value = _converted(label(field), hints[field.name], getattr(instance, field.name))
        rule = field.metadata.get("rule")
        if value is not None and rule is not None and not rule.holds(value):
            raise CormorantError(f"{label(field)} {rule.says.format(value=value)}")
        setattr(instance, field.name, value)


def _converted(name: str, hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` declares. Numbers keep their own type (an int given for a
    float option is recorded as given); only paths are converted."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in kinds:
            return None
        raise CormorantError(f"{name} needs a value")
    base = next(k for k in kinds if k is not type(None))
    if base is Path and isinstance(value, str | Path):
        return Path(value)
    if isinstance(value, bool) and base is not bool:  # bool is an int to Python, not to a user
        raise CormorantError(f"{name} takes {_NAMES.get(base, base.__name__)}, got {value!r}")
    allowed = (int, float) if base is float else (base,)
    if not isinstance(value, allowed):
        raise CormorantError(f"{name} takes {_NAMES.get(base, base.__name__)}, got {value!r}")
    return value


_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false",
          Path: "a path"}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def command_options(declared: type) -> Callable[[F], F]:
    """Give a Typer command one option per ``cli`` field of the dataclass ``declared``.

    The command ends in ``**options``; it receives every generated option there, None when
    it was not given, so a config file's value is not overridden by a default. Each option's
    help is the field's, with its default shown.

    Example:
        >>> @app.command()  # doctest: +SKIP
        ... @command_options(TrainConfig)
        ... def train(config: Path | None = None, **options: object) -> None: ...
    """
    def add(command: F) -> F:
        import typer

        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        hints = _hints(declared)
        generated = [
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=typing.Annotated[
                                  _optional(hints[field.name]),
                                  typer.Option(*_names(field, hints[field.name]),
                                               help=_help(field), show_default=False)])
            for field in dataclasses.fields(declared) if field.metadata.get("cli")]
        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*own, *generated], return_annotation=None)
        return command

    return add


def _optional(hint: Any) -> Any:
    return hint if isinstance(hint, types.UnionType) else hint | None


def _names(field: dataclasses.Field, hint: Any) -> list[str]:
    """``--name`` (``--name/--no-name`` for a switch, so a command line can turn off what a
    config file turned on) and the short alias if any."""
    name = flag(field.name)
    if bool in (typing.get_args(hint) or (hint,)):
        name = f"{name}/--no-{name[2:]}"
    short = field.metadata.get("short")
    return [name, short] if short else [name]


def _help(field: dataclasses.Field) -> str:
    """The field's help and its default (the option's own default is None: not given)."""
    default = field.default
    if default is MISSING or default is None:
        return field.metadata["help"]
    shown = {True: "on", False: "off"}.get(default, default) if isinstance(default, bool) \
        else default
    return f"{field.metadata['help']} Default: {shown}."
