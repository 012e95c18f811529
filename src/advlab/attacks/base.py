"""The framework boundary every attack goes through, the attack registry, and the config base class.

An attack is a core function ``core(model, x, labels, targeted, threat, **settings)`` that returns
``x_adv`` (or an :class:`AttackOutput` with extras). :func:`run_attack` validates input once, converts numpy to
torch and back, puts the model in attack mode, resolves the goal, re-projects ``x_adv`` onto the threat model,
and recomputes success and distance on what is returned. Config classes (``PGD``, ``FGSM``...) are thin frozen
dataclasses around the public functions, carrying capability flags for the CLI, the registry and the tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from advlab import validation
from advlab.goals import Goal, as_goal, is_success
from advlab.losses import LossFn
from advlab.models import Classifier, as_classifier, check_suspicious_outputs
from advlab.registry import Registry
from advlab.result import AttackResult
from advlab.threat import ThreatModel

ATTACKS: Registry[type[AttackConfig]] = Registry("attack")
"""All attack config classes by name (``"pgd"``, ``"fgsm"``...)."""

DEFAULT_SEED = 0
"""Seed used when an attack that draws random numbers gets no ``generator``: results are reproducible by default."""


@dataclass
class AttackOutput:
    """What a core attack function may return instead of a bare ``x_adv``."""

    x_adv: torch.Tensor
    queries: torch.Tensor | None = None
    loss_trace: torch.Tensor | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def make_generator(generator: torch.Generator | int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private generator: from a seed, the one given, or :data:`DEFAULT_SEED`. Never touches the global RNG."""
    if isinstance(generator, torch.Generator):
        return generator
    seed = DEFAULT_SEED if generator is None else validation.check_int("generator", generator, minimum=0)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def loss_and_grad(
    model: nn.Module, x_adv: torch.Tensor, labels: torch.Tensor, targeted: bool, loss_fn: LossFn
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example loss, its gradient with respect to ``x_adv``, and the logits, in one forward/backward."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = loss_fn(logits, labels, targeted)
    (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return loss.detach(), grad, logits.detach()


def _to_tensor(name: str, value: Any) -> torch.Tensor:
    validation.check_tensor_like(name, value)
    if isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
        if name == "x" and t.dtype == torch.float64:
            t = t.float()
        return t
    return value


def _restore(t: torch.Tensor | None, like: Any, *, dtype: Any = None) -> Any:
    """Return ``t`` in the container of ``like``: numpy for numpy input, the same device for tensors."""
    if t is None:
        return None
    if isinstance(like, np.ndarray):
        arr = t.detach().cpu().numpy()
        return arr.astype(dtype) if dtype is not None else arr
    return t.detach().to(like.device)


def prepare_inputs(
    model: nn.Module, x: Any, y: Any, threat: ThreatModel
) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """Validate and convert ``(model, x, y)`` for an attack; moves data to the model's device."""
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat: expected advlab.ThreatModel, got {type(threat).__name__}")
    clf = as_classifier(model, threat.bounds)
    x_t = _to_tensor("x", x)
    y_t = _to_tensor("y", y)
    validation.check_input(x_t, threat.bounds)
    validation.check_input_shape(x_t, clf.input_shape)
    validation.check_labels(y_t, x_t.shape[0], clf.num_classes)
    device = clf.device
    return clf, x_t.to(device), y_t.to(device).long()


def run_attack(
    core: Callable[..., torch.Tensor | AttackOutput],
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None,
    name: str,
    norms: tuple[str, ...],
    supports_targeted: bool = True,
    **settings: Any,
) -> AttackResult:
    """Run ``core`` behind the shared boundary (validation, conversion, attack mode, re-projection).

    Args:
        core: the algorithm, ``core(model, x, labels, targeted, threat, **settings)``.
        model: a ``torch.nn.Module`` returning logits, or an :class:`~advlab.models.Classifier`.
        x: inputs inside ``threat.bounds``, torch or numpy, shape ``(N, ...)``.
        y: true labels, shape ``(N,)``.
        threat: the allowed perturbation set.
        goal: ``None``/``Untargeted()``, ``Targeted(target)`` or ``LeastLikely()``.
        name: attack name, for error messages.
        norms: norms the attack supports.
        supports_targeted: whether a targeted goal is allowed.
        settings: forwarded to ``core``.

    Returns:
        AttackResult with ``x_adv`` in the container (numpy/torch, device) of ``x``.
    """
    if isinstance(threat, ThreatModel) and threat.norm not in norms:
        raise ValueError(
            f"threat: attack {name!r} does not support norm {threat.norm!r}; it supports {list(norms)}. "
            "Choose another norm or another attack (advlab attacks --norm NORM lists them)."
        )
    goal = as_goal(goal)
    if goal.targeted and not supports_targeted:
        raise ValueError(f"goal: attack {name!r} is untargeted only; pass goal=None or choose a targeted attack")
    clf, x_t, y_t = prepare_inputs(model, x, y, threat)
    with clf.attack_mode():
        with torch.no_grad():
            clean_logits = clf(x_t)
        validation.check_model_output(clean_logits, x_t.shape[0])
        check_suspicious_outputs(clean_logits)
        if clf.num_classes is None:
            validation.check_labels(y_t, x_t.shape[0], clean_logits.shape[1])
        labels = goal.resolve(clf, x_t, y_t)
        out: torch.Tensor | AttackOutput
        if threat.eps == 0:
            out = x_t.clone()
        else:
            out = core(clf, x_t, labels, goal.targeted, threat, **settings)
        if not isinstance(out, AttackOutput):
            out = AttackOutput(out)
        x_adv = threat.project(out.x_adv.detach().to(x_t.dtype), x_t)
        with torch.no_grad():
            logits = clf(x_adv)
        success = is_success(logits, labels, goal.targeted)
        distance = threat.distance(x_adv, x_t)
    x_in = x
    return AttackResult(
        x_adv=_restore(x_adv, x_in, dtype=getattr(x_in, "dtype", None) if isinstance(x_in, np.ndarray) else None),
        success=_restore(success, x_in),
        distance=_restore(distance, x_in),
        queries=_restore(out.queries, x_in),
        loss_trace=None if out.loss_trace is None else out.loss_trace.detach().cpu(),
        logits=logits.detach(),
        info={"labels": labels.detach(), "targeted": goal.targeted, **out.info},
    )


@dataclass(frozen=True)
class AttackConfig:
    """Base of the frozen config classes that the CLI, the registry and the evaluation engine use.

    Subclasses set the class variables below, declare their settings as dataclass fields, and implement
    :meth:`run` by calling their public function. Instances are callables:
    ``PGD(steps=40)(model, x, y, threat)``.
    """

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    supports_targeted: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    query_based: ClassVar[bool] = False
    minimum_norm: ClassVar[bool] = False
    """True for attacks that minimise the perturbation and return distances (C&W, DeepFool, FMN...)."""
    paper: ClassVar[str] = ""

    def run(
        self,
        model: nn.Module,
        x: Any,
        y: Any,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        generator: torch.Generator | int | None = None,
    ) -> AttackResult:
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        x: Any,
        y: Any,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        generator: torch.Generator | int | None = None,
    ) -> AttackResult:
        return self.run(model, x, y, threat, goal=goal, generator=generator)

    def settings(self) -> dict[str, Any]:
        """The config's settings as a JSON-friendly dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AttackConfig:
        """Build from a dict of settings (e.g. CLI options), rejecting names the attack does not have."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"attack {cls.name!r} has no setting(s) {unknown}; its settings are {sorted(known) or 'none'}"
            )
        return cls(**options)

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "norms": list(cls.norms),
            "targeted": cls.supports_targeted,
            "needs_gradients": cls.needs_gradients,
            "stochastic": cls.stochastic,
            "query_based": cls.query_based,
            "minimum_norm": cls.minimum_norm,
            "paper": cls.paper,
        }


def get_attack(name: str) -> type[AttackConfig]:
    """The config class registered under ``name`` (e.g. ``"pgd"``)."""
    return ATTACKS.get(name)


def list_attacks(
    *, norm: str | None = None, targeted: bool | None = None, needs_gradients: bool | None = None
) -> list[str]:
    """Names of registered attacks, filtered by capability."""
    out = []
    for key, cls in ATTACKS.items():
        if norm is not None and norm not in cls.norms:
            continue
        if targeted is not None and cls.supports_targeted != targeted and targeted:
            continue
        if needs_gradients is not None and cls.needs_gradients != needs_gradients:
            continue
        out.append(key)
    return out


def warn_once_zero_grad(grad: torch.Tensor, name: str) -> None:
    """Warn when every input gradient is exactly zero (a sign of gradient masking or a saturated softmax)."""
    if not bool(grad.any()):
        validation.warn(
            f"{name}: the input gradient is zero for every example; the attack cannot move. The model may mask "
            "gradients (e.g. a softmax output, a non-differentiable preprocessing); try a black-box attack.",
        )


def attack_in_batches(
    attack: AttackConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    batch_size: int = 250,
    seed: int = DEFAULT_SEED,
    progress: Callable[[int], None] | None = None,
) -> AttackResult:
    """Run ``attack`` over ``x`` in batches and concatenate the results (torch tensors).

    Each batch gets its own generator seeded from ``(seed, batch index)``, so results do not depend on what
    ran before. ``progress`` is called with the number of examples done after each batch.
    """
    batch_size = validation.check_int("batch_size", batch_size, minimum=1)
    parts: list[AttackResult] = []
    for b, start in enumerate(range(0, x.shape[0], batch_size)):
        sl = slice(start, start + batch_size)
        sub_goal = as_goal(goal).subset(torch.arange(start, min(start + batch_size, x.shape[0])))
        gen = make_generator(seed * 1_000_003 + b)
        parts.append(attack(model, x[sl], y[sl], threat, goal=sub_goal, generator=gen))
        if progress is not None:
            progress(min(start + batch_size, x.shape[0]))

    def cat(name: str) -> torch.Tensor | None:
        vals = [getattr(p, name) for p in parts]
        return None if any(v is None for v in vals) else torch.cat([torch.as_tensor(v) for v in vals])

    return AttackResult(
        x_adv=cat("x_adv"),
        success=cat("success"),
        distance=cat("distance"),
        queries=cat("queries"),
        loss_trace=parts[0].loss_trace,
        logits=cat("logits"),
        info={"labels": torch.cat([p.info["labels"] for p in parts]), "targeted": parts[0].info["targeted"]},
    )
