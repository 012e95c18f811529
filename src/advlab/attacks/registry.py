"""Attack registration: the public function's signature is the one source of truth for an attack's settings.

:func:`register_attack` reads the decorated function's keyword-only parameters (name, default, type, constraint,
docstring entry) and derives from them, once:

* the validation of every setting, run on each call before the attack starts;
* the frozen config class (``PGD(steps=40)``) that the CLI, the evaluation engine and the registry use;
* the capability flags (norms, targeted goals, gradients, randomness, queries, minimum-norm);
* the command-line options of ``advlab attack`` and the table of ``advlab attacks NAME``;
* deprecated aliases of renamed settings, which keep working for one release with a ``FutureWarning``.

Aliases (``apgd-ce``, ``illc``, ``cw``) name a registered attack with some settings or a goal fixed, and resolve the
same way everywhere through :func:`make_attack`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, Protocol, cast

import torch

from advlab import devices, validation
from advlab import settings as settings_mod
from advlab.goals import Goal, Untargeted, as_goal
from advlab.registry import Registry
from advlab.result import AttackResult
from advlab.rng import ExampleRNG
from advlab.settings import Setting
from advlab.threat import DEFAULT_BOUNDS, ThreatModel, check_threat_model

if TYPE_CHECKING:
    from torch import nn

P = ParamSpec("P")

ALL_NORMS = ("linf", "l2", "l1")
"""The norms of the dense attacks; ``"l0"`` is added by the attacks that support it."""

RESERVED = ("model", "x", "y", "threat", "goal", "generator")
"""Parameters every attack function has that are not settings."""


@dataclass(frozen=True)
class AttackSpec:
    """Everything the framework knows about a registered attack, all derived from its function and decorator."""

    name: str
    function: Callable[..., AttackResult]
    settings: Mapping[str, Setting]
    norms: tuple[str, ...]
    paper: str
    targeted: bool = True
    needs_gradients: bool = True
    needs_scores: bool = True
    stochastic: bool = False
    query_based: bool = False
    minimum_norm: bool = False
    constraints: bool = False
    renamed: Mapping[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first sentence of the function's docstring."""
        return (inspect.getdoc(self.function) or "").split("\n\n")[0].replace("\n", " ")

    def check_call(self, threat: Any, goal: Any, model: Any = None) -> None:
        """The threat model's constraints, norm and goal are ones this attack supports (before any work); warn on an linf
        eps as wide as the box (``model``'s bounds when the threat model has none)."""
        check_threat_model(threat)
        if threat.constraints is not None and not self.constraints:
            supported = ", ".join(n for n, c in ATTACKS.items() if c.spec.constraints)
            raise ValueError(
                f"threat: attack {self.name!r} does not support feature constraints ({threat.constraints.describe()}); "
                f"the attacks that do: {supported or 'none registered'}. Choose one of them, or drop the constraints."
            )
        if threat.norm not in self.norms:
            raise ValueError(
                f"threat: attack {self.name!r} does not support norm {threat.norm!r}; it supports {list(self.norms)}. "
                "Choose another norm or another attack (advlab attacks --norm NORM lists them)."
            )
        if as_goal(goal).targeted and not self.targeted:
            raise ValueError(
                f"goal: attack {self.name!r} is untargeted only; pass goal=None or choose a targeted attack"
            )
        if not self.minimum_norm:  # a minimum-norm attack's large eps means "unbounded"
            box = threat.bounds or getattr(model, "bounds", None) or DEFAULT_BOUNDS
            validation.check_eps_in_box(threat.eps, threat.norm, box)

    def capabilities(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "norms": list(self.norms),
            "targeted": self.targeted,
            "needs_gradients": self.needs_gradients,
            "needs_scores": self.needs_scores,
            "stochastic": self.stochastic,
            "query_based": self.query_based,
            "minimum_norm": self.minimum_norm,
            "constraints": self.constraints,
            "paper": self.paper,
        }


class AttackConfig:
    """Base of the frozen config classes derived by :func:`register_attack` (``PGD``, ``APGD``, ...).

    An instance holds one attack's settings and is a callable with the attack function's interface:
    ``PGD(steps=40)(model, x, y, threat, goal=None, generator=0)``. An alias may fix the goal
    (``make_attack("illc")`` is ``BIM`` with ``goal=LeastLikely()``).
    """

    spec: ClassVar[AttackSpec]
    name: ClassVar[str]
    norms: ClassVar[tuple[str, ...]]
    supports_targeted: ClassVar[bool]
    needs_gradients: ClassVar[bool]
    needs_scores: ClassVar[bool]
    stochastic: ClassVar[bool]
    query_based: ClassVar[bool]
    minimum_norm: ClassVar[bool]
    supports_constraints: ClassVar[bool]
    paper: ClassVar[str]
    goal: Goal | None

    if TYPE_CHECKING:

        def __init__(self, *, goal: Goal | None = None, **settings: Any) -> None: ...

    def run(
        self,
        model: nn.Module,
        x: Any,
        y: Any,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        generator: torch.Generator | int | ExampleRNG | None = None,
    ) -> AttackResult:
        """Run the attack with these settings (see the attack function for the arguments)."""
        return self.spec.function(model, x, y, threat, goal=self._goal(goal), generator=generator, **self.settings())

    __call__ = run

    def _goal(self, goal: Goal | None) -> Goal | None:
        if self.goal is None:
            return goal
        if goal is not None and not isinstance(goal, (Untargeted, type(self.goal))):
            raise ValueError(
                f"goal: this {self.name!r} config has its goal fixed to {self.goal.name!r}; pass no goal, "
                f"or build the config without one (make_attack({self.name!r}))"
            )
        return self.goal

    def replace(self, **changes: Any) -> AttackConfig:
        """A copy with some settings (or the fixed goal) changed, validated like a new config."""
        return cast(AttackConfig, dataclasses.replace(cast(Any, self), **changes))

    def settings(self) -> dict[str, Any]:
        """The settings as a JSON-friendly dict (the fixed goal of an alias is not a setting)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(cast(Any, self)) if f.name != "goal"}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AttackConfig:
        """Build from a dict of settings (CLI options, a preset), refusing names the attack does not have."""
        return cls(**dict(options))

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return cls.spec.capabilities()


class AttackFunction(Protocol, Generic[P]):
    """A registered attack function: callable as written, with its :class:`AttackSpec` and config class."""

    spec: AttackSpec
    config: type[AttackConfig]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> AttackResult: ...


ATTACKS: Registry[type[AttackConfig]] = Registry("attack")
"""The config class of every registered attack, by name (``"pgd"``, ``"apgd"``, ...)."""


@dataclass(frozen=True)
class Alias:
    """A name for a registered attack with settings or a goal fixed (``apgd-ce``), or one attack per norm (``cw``)."""

    attack: str | Mapping[str, str]
    settings: Mapping[str, Any] = field(default_factory=dict)
    goal: Goal | None = None
    doc: str = ""

    @property
    def per_norm(self) -> bool:
        """Whether the alias stands for one attack per norm (``cw``)."""
        return not isinstance(self.attack, str)

    def covers(self, norm: str) -> bool:
        """Whether the alias resolves for ``norm`` (always, unless it is per norm and has none for it)."""
        return isinstance(self.attack, str) or norm in self.attack

    def target(self, name: str, norm: str | None) -> str:
        if isinstance(self.attack, str):
            return self.attack
        if norm is None or norm not in self.attack:
            raise ValueError(
                f"attack {name!r} stands for one attack per norm ({', '.join(f'{k}: {v}' for k, v in self.attack.items())}); "
                + ("give the norm" if norm is None else f"there is none for {norm!r}")
            )
        return self.attack[norm]


ALIASES: dict[str, Alias] = {}
"""Alias names, resolved by :func:`make_attack`."""


def register_attack(
    config: str,
    *,
    norms: tuple[str, ...],
    paper: str,
    name: str | None = None,
    targeted: bool = True,
    needs_gradients: bool = True,
    needs_scores: bool = True,
    stochastic: bool = False,
    query_based: bool = False,
    minimum_norm: bool = False,
    constraints: bool = False,
    renamed: Mapping[str, str] | None = None,
    aliases: Mapping[str, Alias] | None = None,
    register: bool = True,
) -> Callable[[Callable[P, AttackResult]], AttackFunction[P]]:
    """Register an attack function; derive its config class, settings validation and capabilities from it.

    Args:
        config: name of the derived config class (``"PGD"``); bind it in the module with ``PGD = pgd.config``.
        norms: the norms the attack supports.
        paper: authors, year and arXiv id.
        name: registry name (default: the function's name with ``_`` as ``-``).
        targeted: whether targeted goals are supported.
        needs_gradients: whether the attack differentiates the model. One that does not runs at full precision
            whatever the classifier's ``precision`` (:func:`advlab.devices.full_precision`): it decides by comparing
            scores, and bfloat16 logits (8 significant bits) hide the small gains its search climbs by.
        needs_scores: whether it reads the model's scores; ``False`` for decision-based attacks, which need only the
            predicted labels (an oracle in ``"labels"`` mode).
        stochastic: whether the attack draws random numbers (from its ``generator``: a ``torch.Generator`` or seed, one
            stream for the batch, or an :class:`~advlab.rng.ExampleRNG`, one stream per example).
        query_based: whether it counts queries (score- or decision-based).
        minimum_norm: whether it searches the smallest perturbation and returns distances.
        constraints: whether it honours a threat model's :class:`~advlab.threat.FeatureConstraints` (binary
            features, one direction of change, a mask) in its search; the others are refused when a threat model
            carries constraints. The boundary re-projects every result onto them either way.
        renamed: ``{old name: new name}`` of settings renamed in this release (accepted with a ``FutureWarning``).
        aliases: other names for this attack with fixed settings or goal (``{"apgd-ce": Alias("apgd", {...})}``).
        register: add the attack to :data:`ATTACKS` (and so to the CLI, the presets and the conformance suite);
            ``False`` derives the config without registering it (a user's private attack, a test's toy attack).

    Examples:
        >>> @register_attack("PGD", norms=("linf", "l2"), paper="Madry et al. 2018, arXiv:1706.06083")
        ... def pgd(model, x, y, threat, *, goal=None, steps: PositiveInt = 40, generator=None): ...
        >>> PGD = pgd.config
    """

    def decorate(fn: Callable[P, AttackResult]) -> AttackFunction[P]:
        spec = AttackSpec(
            name=name or fn.__name__.replace("_", "-"),
            function=fn,
            settings=settings_mod.settings_of(fn, exclude=RESERVED),
            norms=tuple(norms),
            paper=paper,
            targeted=targeted,
            needs_gradients=needs_gradients,
            needs_scores=needs_scores,
            stochastic=stochastic,
            query_based=query_based,
            minimum_norm=minimum_norm,
            constraints=constraints,
            renamed=dict(renamed or {}),
        )
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def attack(*args: Any, **kwargs: Any) -> AttackResult:
            kwargs = settings_mod.rename_deprecated(spec.name, kwargs, spec.renamed)
            given = {k: v for k, v in kwargs.items() if k not in signature.parameters or k in spec.settings}
            kwargs.update(settings_mod.validate_all(spec.name, spec.settings, given))
            bound = signature.bind(*args, **kwargs)
            spec.check_call(bound.arguments.get("threat"), bound.arguments.get("goal"), bound.arguments.get("model"))
            if spec.needs_gradients:
                return fn(*bound.args, **bound.kwargs)
            with (
                devices.full_precision()
            ):  # scores compared in bf16 hide the small gains a gradient-free search climbs by
                return fn(*bound.args, **bound.kwargs)

        wrapper = cast(AttackFunction[P], attack)
        wrapper.spec = spec
        wrapper.config = _derive_config(config, spec)
        object.__setattr__(spec, "function", wrapper)
        if register:
            ATTACKS.register(spec.name)(wrapper.config)
            for alias, target in (aliases or {}).items():
                register_alias(alias, target)
        return wrapper

    return decorate


def _derive_config(class_name: str, spec: AttackSpec) -> type[AttackConfig]:
    """The frozen dataclass of ``spec``'s settings, with the capability flags as class variables."""
    fields: list[tuple[str, Any, Any]] = [
        (s.name, Any, dataclasses.field(default=s.default)) for s in spec.settings.values()
    ]
    fields.append(("goal", Any, dataclasses.field(default=None, kw_only=True, repr=False)))

    def __post_init__(self: Any) -> None:
        values = settings_mod.validate_all(spec.name, spec.settings, self.settings())
        for key, value in values.items():
            object.__setattr__(self, key, value)

    namespace = {
        "__post_init__": __post_init__,
        "__doc__": f"Settings of :func:`{spec.function.__module__}.{spec.function.__name__}` ({spec.paper}).",
        "spec": spec,
        "name": spec.name,
        "norms": spec.norms,
        "supports_targeted": spec.targeted,
        "needs_gradients": spec.needs_gradients,
        "needs_scores": spec.needs_scores,
        "stochastic": spec.stochastic,
        "query_based": spec.query_based,
        "minimum_norm": spec.minimum_norm,
        "supports_constraints": spec.constraints,
        "paper": spec.paper,
    }
    cls = dataclasses.make_dataclass(class_name, fields, bases=(AttackConfig,), namespace=namespace, frozen=True)
    cls.__module__ = spec.function.__module__
    generated_init = cast(Any, cls).__init__

    def __init__(self: Any, **values: Any) -> None:
        values = settings_mod.rename_deprecated(spec.name, values, spec.renamed)
        settings_mod.check_known(spec.name, spec.settings, (k for k in values if k != "goal"))
        generated_init(self, **values)

    __init__.__signature__ = inspect.signature(generated_init)  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def register_alias(name: str, alias: Alias) -> None:
    """Make ``name`` resolve to ``alias`` in :func:`make_attack` (and so in the CLI, presets and reports)."""
    key = name.lower()
    if key in ALIASES or key in ATTACKS:
        raise ValueError(f"attack name {name!r} is registered twice")
    ALIASES[key] = alias


def attack_names(*, aliases: bool = True) -> list[str]:
    """Registered attack names, sorted, with the alias names unless ``aliases=False``."""
    return sorted(set(ATTACKS.names()) | (set(ALIASES) if aliases else set()))


def is_attack(name: Any) -> bool:
    """Whether ``name`` is a registered attack or alias."""
    return isinstance(name, str) and (name.strip().lower() in ATTACKS or name.strip().lower() in ALIASES)


def resolve(
    name: str, norm: str | None = None, *, argument: str = "attack"
) -> tuple[type[AttackConfig], dict[str, Any], Goal | None]:
    """``(config class, fixed settings, fixed goal)`` of an attack or alias name.

    ``argument`` names the argument or option in error messages (``"attacks"``, ``"--attack"``).

    Raises:
        ValueError: an unknown name (with the closest names), or a per-norm alias without a matching norm.
    """
    if not isinstance(name, str):
        raise TypeError(f"{argument}: expected an attack name (str), got {type(name).__name__}")
    key = name.strip().lower()
    alias = ALIASES.get(key)
    if alias is not None:
        return ATTACKS.get(alias.target(key, norm)), dict(alias.settings), alias.goal
    if key not in ATTACKS:
        raise ValueError(
            f"{argument}: unknown attack {name!r}; available: {', '.join(attack_names())}."
            + validation.did_you_mean(key, attack_names())
            + " (`advlab attacks` lists them)"
        )
    return ATTACKS.get(key), {}, None


def make_attack(name: str, *, norm: str | None = None, argument: str = "attack", **settings: Any) -> AttackConfig:
    """The config of an attack or alias with ``settings`` on top of the alias's fixed ones.

    Examples:
        >>> make_attack("apgd-ce", steps=50)   # APGD(steps=50, loss="ce")
        >>> make_attack("cw", norm="l2")        # CarliniWagnerL2()
    """
    cls, fixed, goal = resolve(name, norm, argument=argument)
    clash = sorted(k for k in settings if k in fixed and settings[k] != fixed[k])
    if clash:
        raise ValueError(f"{name}: {', '.join(clash)} is fixed by this alias ({fixed}); use {cls.name!r} to change it")
    return cls(goal=goal, **{**fixed, **settings})


def get_attack(name: str) -> type[AttackConfig]:
    """The config class registered under ``name`` (an alias gives its attack's class)."""
    return resolve(name)[0]


def list_attacks(
    *,
    norm: str | None = None,
    targeted: bool | None = None,
    needs_gradients: bool | None = None,
    needs_scores: bool | None = None,
) -> list[str]:
    """Names of registered attacks, filtered by capability (``None``: either)."""
    out = []
    for key, cls in ATTACKS.items():
        if norm is not None and norm not in cls.norms:
            continue
        if targeted and not cls.supports_targeted:
            continue
        if needs_gradients is not None and cls.needs_gradients != needs_gradients:
            continue
        if needs_scores is not None and cls.needs_scores != needs_scores:
            continue
        out.append(key)
    return out
