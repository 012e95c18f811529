"""Settings declared once, in a signature: their constraints, validation, documentation and command-line parsing.

A setting is a keyword-only parameter of an attack function or a trainer's constructor. Its name, default and
type are the parameter's; a constraint rides along in the annotation (``steps: PositiveInt = 40``,
``rho: Annotated[float, Range(0, 1, strict_min=True)] = 0.75``); its help text is the ``Args:`` entry of the
docstring. Everything else — the frozen config class, the capability table, the ``--steps`` flag of
``advlab attack``, the check that refuses ``steps=0`` — is derived from that one place by :func:`settings_of`.

Examples:
    >>> def attack(model, x, y, threat, *, steps: PositiveInt = 40, lr: PositiveFloat = 0.01):
    ...     '''Args:
    ...         steps: iterations.
    ...         lr: learning rate.
    ...     '''
    >>> settings_of(attack)["steps"].validate(0)
    Traceback (most recent call last):
    ValueError: steps: expected an int >= 1, got 0
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar

from advlab import validation

_P = ParamSpec("_P")
_R = TypeVar("_R")

# ---------------------------------------------------------------------------------------------- constraints


@dataclass(frozen=True)
class Range:
    """A numeric constraint in an annotation: ``Annotated[int, Range(1)]`` is an int >= 1."""

    minimum: float | None = None
    maximum: float | None = None
    strict_min: bool = False
    strict_max: bool = False

    def describe(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.strict_min else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"{'<' if self.strict_max else '<='} {self.maximum:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class OneOf:
    """A choice among a few values: ``Annotated[str, OneOf(("ce", "dlr"))]``."""

    choices: tuple[Any, ...]
    remedy: str = ""


@dataclass(frozen=True)
class Check:
    """A custom check ``fn(name, value) -> value`` for what a type and a range cannot say."""

    fn: Callable[[str, Any], Any]


@dataclass(frozen=True)
class NotASetting:
    """Marks a keyword that is data, not a setting (a tensor of starting points): it is not in the config, the
    card or the command line, and is passed through unchecked."""


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, strict_min=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]
"""A number in ``[0, 1]``."""

SHARED_NAMES: Mapping[str, str] = {
    "steps": "iterations of the attack or the inner maximisation",
    "step_size": "length of one step, in the threat model's norm",
    "restarts": "runs from new random starts, the best kept per example",
    "max_queries": "query budget per example",
    "lr": "learning rate of an optimiser",
    "momentum": "weight of the previous update",
    "eps": "radius of the threat model",
    "seed": "seed of a private generator",
    "generator": "torch.Generator or int seed",
    "batch_size": "examples per forward/backward pass",
    "epochs": "passes over the training data",
    "loss": "the loss the attack ascends",
}
"""The vocabulary every attack and trainer shares (STYLE.md, "Naming"): a setting with one of these meanings has
this name, never a synonym."""

SYNONYMS: Mapping[str, str] = {
    "n_iter": "steps",
    "max_iter": "steps",
    "num_iter": "steps",
    "nb_iter": "steps",
    "iterations": "steps",
    "n_steps": "steps",
    "n_queries": "max_queries",
    "query_budget": "max_queries",
    "learning_rate": "lr",
    "n_restarts": "restarts",
    "num_restarts": "restarts",
    "alpha_step": "step_size",
    "eps_step": "step_size",
    "nb_epochs": "epochs",
    "decay": "momentum",
}
"""Names other libraries use for the shared settings; the conformance suites refuse them as setting names."""

NONE_WORDS = ("none", "null", "default")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


# ---------------------------------------------------------------------------------------------- one setting


@dataclass(frozen=True)
class Setting:
    """One declared setting: name, default, base type, whether ``None`` is allowed, constraints and help text."""

    name: str
    default: Any
    type: Any
    optional: bool
    constraints: tuple[Any, ...] = ()
    doc: str = ""

    @property
    def type_name(self) -> str:
        if self.type in (int, float, bool, str):
            return str(self.type.__name__)
        return "value"

    def validate(self, value: Any) -> Any:
        """``value`` checked against the type and constraints; returns it normalised (``np.int64(3)`` -> ``3``).

        Raises:
            TypeError, ValueError: naming the setting, what was expected and what came.
        """
        if value is None and (self.optional or self.default is None):
            return None
        checks = [c for c in self.constraints if isinstance(c, Check)]
        if checks:
            for c in checks:
                value = c.fn(self.name, value)
            return value
        value = self._check_type(value)
        for c in self.constraints:
            if isinstance(c, OneOf):
                validation.check_choice(self.name, value, c.choices, c.remedy)
        return value

    def _check_type(self, value: Any) -> Any:
        rng = next((c for c in self.constraints if isinstance(c, Range)), Range())
        if self.type is bool:
            if not isinstance(value, bool) and type(value).__name__ != "bool_":
                raise TypeError(f"{self.name}: expected True or False, got {type(value).__name__} {value!r}")
            return bool(value)
        if self.type is int:
            low = None if rng.minimum is None else int(rng.minimum) + (1 if rng.strict_min else 0)
            high = None if rng.maximum is None else int(rng.maximum) - (1 if rng.strict_max else 0)
            return validation.check_int(self.name, value, minimum=low, maximum=high)
        if self.type is float:
            return validation.check_float(
                self.name, value, minimum=rng.minimum, maximum=rng.maximum, strict_min=rng.strict_min,
                strict_max=rng.strict_max,
            )  # fmt: skip
        if self.type is str and not isinstance(value, str):
            raise TypeError(f"{self.name}: expected a string, got {type(value).__name__} {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """The value of ``text`` as typed on a command line (``"40"``, ``"8/255"``, ``"none"``, ``"true"``)."""
        raw = text.strip()
        if raw.lower() in NONE_WORDS and (self.optional or self.default is None):
            return None
        if self.type is bool:
            if raw.lower() in TRUE_WORDS:
                return True
            if raw.lower() in FALSE_WORDS:
                return False
            raise ValueError(f"{self.name}: expected true or false, got {text!r}")
        if self.type is int:
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{self.name}: expected a whole number, got {text!r}") from None
        if self.type is float:
            return parse_number(raw, self.name)
        return _literal(raw)

    def describe(self) -> str:
        """One line for ``--help`` and ``advlab attacks NAME``: the help text (plain), the constraint."""
        parts = [plain_text(self.doc).rstrip(".")] if self.doc else []
        rng = next((c for c in self.constraints if isinstance(c, Range)), None)
        choice = next((c for c in self.constraints if isinstance(c, OneOf)), None)
        if choice is not None:
            parts.append("one of " + ", ".join(map(str, choice.choices)))
        elif rng is not None and rng.describe():
            parts.append(rng.describe())
        return "; ".join(parts)


def plain_text(doc: str) -> str:
    """Docstring markup made readable on a terminal: ``code`` -> code, :func:`name` -> name."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")


def parse_number(text: str, name: str) -> float:
    """``"0.3"``, ``"8/255"`` or ``"1e-3"`` as a float, with an error naming ``name``."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{name}: cannot read {text!r} as a number (examples: 0.3, 8/255, 1e-3)") from None


def _literal(text: str) -> Any:
    """A string setting stays a string; numbers inside a string-typed union (``"ce"`` or a float) are parsed."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# ---------------------------------------------------------------------------------------------- from signatures


def settings_of(fn: Callable[..., Any], *, exclude: Iterable[str] = ()) -> dict[str, Setting]:
    """The keyword-only parameters of ``fn`` as :class:`Setting` objects, in signature order.

    Constraints come from ``Annotated`` metadata, help text from the docstring's ``Args:`` section. Parameters
    named in ``exclude`` and those marked :class:`NotASetting` are left out.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    docs = docstring_args(inspect.getdoc(fn) or "")
    out: dict[str, Setting] = {}
    skip = set(exclude)
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in skip:
            continue
        base, optional, meta = _unpack(hints.get(p.name, Any))
        if any(isinstance(m, NotASetting) for m in meta):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        out[p.name] = Setting(p.name, default, base, optional, tuple(meta), docs.get(p.name, ""))
    return out


def _unpack(hint: Any) -> tuple[Any, bool, list[Any]]:
    """``Annotated[int | None, Range(1)]`` -> ``(int, True, [Range(1)])``."""
    meta: list[Any] = []
    if typing.get_origin(hint) is Annotated:
        meta = list(hint.__metadata__)
        hint = hint.__origin__
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        inner = [_unpack(a) for a in args]
        for _, _, m in inner:
            meta.extend(m)
        hint = inner[0][0] if len(inner) == 1 else typing.Union[tuple(i[0] for i in inner)]  # noqa: UP007
    return hint, optional, meta


_SECTION = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
_ARG = re.compile(r"^(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


def docstring_args(doc: str) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section, ``{name: one-paragraph text}``."""
    out: dict[str, str] = {}
    in_args, current, indent = False, None, None
    for line in doc.splitlines():
        stripped = line.strip()
        if _SECTION.match(line):
            in_args, current = _SECTION.match(line).group(1) in ("Args", "Arguments", "Parameters"), None  # type: ignore[union-attr]
            indent = None
            continue
        if not in_args or not stripped:
            continue
        level = len(line) - len(line.lstrip())
        if indent is None:
            indent = level
        m = _ARG.match(stripped)
        if level == indent and m:
            current = m.group(1).lstrip("*")
            out[current] = m.group(2)
        elif level > indent and current is not None:
            out[current] += " " + stripped
        elif level < indent:
            in_args = False
    return out


# ---------------------------------------------------------------------------------------------- renamed settings


def rename_deprecated(owner: str, values: dict[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """``values`` with deprecated names replaced by their new ones, warning once per use (``FutureWarning``).

    Raises:
        TypeError: when both the old and the new name are given.
    """
    if not renamed or not any(k in renamed for k in values):
        return values
    out = dict(values)
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise TypeError(
                f"{owner}: got both {old!r} and {new!r}; {old!r} is the old name of {new!r}, give only {new!r}"
            )
        out[new] = out.pop(old)
        validation.warn(
            f"{owner}: the setting {old!r} is now called {new!r} (the name every attack and trainer uses); "
            f"{old!r} still works in this release and will be removed in the next",
            FutureWarning,
        )
    return out


def check_known(owner: str, declared: Mapping[str, Setting], names: Iterable[str]) -> None:
    """Raise ``TypeError`` for a name that is not a declared setting, listing the settings (and the shared name
    when the unknown one is a known synonym)."""
    unknown = sorted(set(names) - set(declared))
    if unknown:
        hints = [f"{u!r} (did you mean {SYNONYMS[u]!r}?)" if SYNONYMS.get(u) in declared else repr(u) for u in unknown]
        raise TypeError(
            f"{owner}: no setting {', '.join(hints)}; its settings are {', '.join(declared) or 'none'}"
            + validation.did_you_mean(unknown[0], declared)
        )


def renamed(mapping: Mapping[str, str]) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a function whose keywords were renamed: the old names keep working one release (FutureWarning).

    Examples:
        >>> @renamed({"max_iter": "steps"})
        ... def forest_attack(model, x, y, *, steps=50): ...
    """

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            return fn(*args, **rename_deprecated(fn.__name__, kwargs, mapping))

        return wrapper

    return decorate


def validate_all(owner: str, declared: Mapping[str, Setting], values: Mapping[str, Any]) -> dict[str, Any]:
    """Each of ``values`` validated by its declared :class:`Setting`; an unknown name raises with the known ones."""
    check_known(owner, declared, values)
    return {k: declared[k].validate(v) for k, v in values.items()}
