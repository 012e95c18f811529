"""The framework boundary every attack goes through: checks, conversion, attack mode, re-projection.

An attack is a core function ``core(model, x, labels, targeted, threat, **settings)`` that returns ``x_adv`` (or an
:class:`AttackOutput` with extras). :func:`run_attack` validates the input once, converts numpy to torch and back,
puts the model in attack mode, resolves the goal, re-projects ``x_adv`` onto the threat model and recomputes
success and distance on what is returned. Attacks that need the prepared inputs themselves (the query attacks, to
count queries) use :func:`attack_boundary` directly. Settings are validated before this, by the attack's
registration (:mod:`advlab.attacks.registry`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, overload

import numpy as np
import torch
from torch import nn

from advlab import devices, validation
from advlab.goals import Goal, as_goal, is_success
from advlab.losses import LossFn
from advlab.models import Classifier, as_classifier, check_suspicious_outputs, device_of, parameter_dtype
from advlab.oracles import Oracle, as_module
from advlab.result import ArrayLike, AttackResult
from advlab.rng import DEFAULT_SEED, RNG, ExampleRNG
from advlab.threat import ThreatModel, check_threat_model

SYNC_EVERY = 8
"""Iterations between the looks of an attack loop at a stopping test that needs the device's answer (``if
done.all():``): on an accelerator each look makes the host wait for the device, so a loop whose extra iterations
cannot change the result looks only every this many iterations, at the cost of at most ``SYNC_EVERY - 1`` iterations
too many (:func:`stop_check_every`)."""

FREE_SYNC_DEVICES = frozenset({"cpu"})
"""Device types whose results the host reads without waiting for queued work: loops there look every iteration."""

Randomness = torch.Generator | int | ExampleRNG | None
"""What an attack's ``generator`` argument takes: a ``torch.Generator`` or an int seed (one stream for the batch), an
:class:`~advlab.rng.ExampleRNG` (one stream per example) or ``None`` (seed :data:`~advlab.rng.DEFAULT_SEED`)."""


@dataclass
class AttackOutput:
    """What a core attack function may return instead of a bare ``x_adv``.

    Attributes:
        x_adv: the adversarial examples.
        queries: per-example model queries (query attacks).
        loss_trace: the mean loss per iteration.
        info: attack-specific extras, passed on to :attr:`advlab.AttackResult.info`.
        evaluated: ``(point, logits)``: a batch of the shape of ``x`` and its logits from a forward of the model
            without gradients, made by the core anyway (the success check on its last iterate), in a
            :func:`advlab.devices.own_layout` block. Where the boundary's re-projection of ``x_adv`` gives exactly
            ``point`` and the forward ran at full precision, the boundary takes these logits for its success check
            instead of making the same forward again (:meth:`PreparedAttack.result`).
    """

    x_adv: torch.Tensor
    queries: torch.Tensor | None = None
    loss_trace: torch.Tensor | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluated: tuple[torch.Tensor, torch.Tensor] | None = None


def stop_check_every(device: torch.device) -> int:
    """How many iterations an attack loop on ``device`` makes between looks at its early stop.

    1 on the CPU, where a look costs nothing and stopping at once saves iterations; :data:`SYNC_EVERY` on an
    accelerator, where a look is a host synchronisation. A loop using it must return the same result either way.

    Args:
        device: the device the loop's tensors are on.

    Examples:
        >>> stop_check_every(torch.device("cpu")), stop_check_every(torch.device("cuda"))
        (1, 8)
    """
    return 1 if device.type in FREE_SYNC_DEVICES else SYNC_EVERY


def make_generator(generator: torch.Generator | int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private ``torch.Generator``: from a seed, the one given, or :data:`DEFAULT_SEED`. Never touches the global RNG.

    For procedures that draw for a whole batch (training data order, patch placements); attacks take their
    randomness through :func:`advlab.rng.as_rng`, which also accepts per-example streams.
    """
    if isinstance(generator, torch.Generator):
        return generator
    seed = DEFAULT_SEED if generator is None else validation.check_int("generator", generator, minimum=0)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def is_keyed(rng: RNG) -> bool:
    """Whether ``rng`` gives each example its own stream (an :class:`~advlab.rng.ExampleRNG`).

    An attack whose batch stream (a ``torch.Generator``) draws once for the whole batch, or for every row when only
    some need a draw, draws per row and only for those rows when the streams are keyed, so that an example's draws
    do not depend on the other rows; its output for a ``torch.Generator`` stays what it always was.
    """
    return isinstance(rng, ExampleRNG)


BATCHED_STAGE = "attack"
"""The stage label of :func:`attack_in_batches`' per-example streams."""

BULK_SEED_MASK = 2**63 - 1
"""Per-row seeds of :func:`draw_per_row` are 63-bit (``torch.Generator.manual_seed`` takes any non-negative int)."""


def draw_per_row(
    rng: ExampleRNG,
    shape: tuple[int, ...],
    kind: Literal["rand", "randn", "signs"],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Many numbers per row from per-example streams: one call seeds a ``torch.Generator`` per row, which draws them.

    Philox in tensor arithmetic costs about a hundred times what a native generator does per number, so the
    gradient estimates of the query attacks, which need thousands of numbers per example and iteration, draw them
    this way; the row's stream still advances by one call, so its draws stay independent of the batch. (The numbers
    depend on the device's native generator, which differs between CPU and CUDA.)

    Args:
        rng: the per-example streams of the rows.
        shape: ``(rows, ...)``.
        kind: ``"rand"`` (uniform in [0, 1)), ``"randn"`` (standard normal) or ``"signs"`` (uniform in {-1, 1}).
        dtype: floating dtype of the result.
        device: where the numbers are drawn (default: the streams' device).

    Returns:
        A tensor of ``shape``.

    Examples:
        >>> u = draw_per_row(ExampleRNG(0, "nes", ids), (len(ids), 25, 784), "randn")
    """
    device = torch.device(device) if device is not None else rng.device
    words = rng.words(2)
    seeds = ((words[:, 0] << 32) | words[:, 1]) & BULK_SEED_MASK
    out = torch.empty(shape, dtype=dtype, device=device)
    g = torch.Generator(device=device)
    for row, seed in zip(out, seeds.tolist(), strict=True):
        g.manual_seed(seed)
        if kind == "randn":
            row.normal_(generator=g)
        elif kind == "rand":
            row.uniform_(generator=g)
        else:
            row.bernoulli_(0.5, generator=g).mul_(2).sub_(1)
    return out


def loss_and_grad(
    model: nn.Module, x_adv: torch.Tensor, labels: torch.Tensor, targeted: bool, loss_fn: LossFn
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example loss, its gradient with respect to ``x_adv``, and the logits, in one forward/backward."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = loss_fn(logits, labels, targeted)
    (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return loss.detach(), grad, logits.detach()


@overload
def to_container(t: torch.Tensor, like: Any, *, dtype: Any = None) -> ArrayLike: ...
@overload
def to_container(t: None, like: Any, *, dtype: Any = None) -> None: ...
def to_container(t: torch.Tensor | None, like: Any, *, dtype: Any = None) -> ArrayLike | None:
    """``t`` in the container of ``like``: numpy for numpy input, else on ``like``'s device; cast to ``dtype``."""
    if t is None:
        return None
    if isinstance(like, np.ndarray):
        arr = t.detach().cpu().numpy()
        return arr.astype(dtype) if dtype is not None else arr
    return t.detach().to(like.device, dtype=dtype)


def prepare_inputs(
    model: nn.Module, x: Any, y: Any, threat: ThreatModel
) -> tuple[Classifier, torch.Tensor, torch.Tensor, ThreatModel]:
    """Validate and convert ``(model, x, y)`` for an attack; moves data to the model's device and dtype.

    ``x`` and ``y`` are tensors or arrays (``y`` also a list of labels), or ``x`` is a container of both (a
    Dataset, DataLoader, TensorDataset, dict or pair: :func:`advlab.validation.as_xy`) and ``y`` is ``None``. A
    threat model without bounds takes the classifier's (:meth:`ThreatModel.resolve`). Inputs of any floating dtype,
    torch tensors and numpy arrays alike, are cast to the dtype of the model's parameters (float32 for a model
    without parameters): float64 inputs of a float32 model are attacked in float32, a float64 model gets float64
    (numpy float64 arrays pass through float32 on their way). The result comes back in the input's container and
    dtype.

    Returns:
        The classifier, ``x`` and ``y`` on its device, and the threat model with its bounds resolved.
    """
    check_threat_model(threat)
    clf = as_classifier(as_module(model) if isinstance(model, Oracle) else model, threat.bounds)
    threat = threat.resolve(clf.bounds)
    dtype = parameter_dtype(clf.module)
    float32: Literal["float64", "numpy"] = "float64" if dtype == torch.float32 else "numpy"
    x_t, y_t = validation.as_xy(x if y is None else (x, y), "x", float32=float32, parts=("x", "y"))
    validation.check_input(x_t, threat.box)
    if threat.constraints is not None:
        threat.constraints.check(x_t, threat.eps, threat.box)
    validation.check_input_shape(x_t, clf.input_shape)
    validation.check_labels(y_t, x_t.shape[0], clf.num_classes)
    return clf, devices.to_device(x_t, clf.device, dtype), devices.to_device(y_t, clf.device).long(), threat


@dataclass(frozen=True)
class PreparedAttack:
    """The inputs of one attack call after the boundary's checks: what a core function works on.

    Attributes:
        model: the classifier, in attack mode while the core runs.
        x: the clean batch as a tensor on the model's device.
        labels: true labels (untargeted goals) or targets (targeted goals).
        targeted: whether success means ``argmax == labels``.
        threat: the threat model.
        x_in: ``x`` as the caller gave it (numpy or torch), for the result's container; the CPU tensor read from a
            container (DataLoader, dict...), whose results come back as CPU tensors.
        correct: per example, whether the model classifies the clean input correctly (the examples
            :attr:`advlab.AttackResult.success_rate` counts).
    """

    model: Classifier
    x: torch.Tensor
    labels: torch.Tensor
    targeted: bool
    threat: ThreatModel
    x_in: Any
    correct: torch.Tensor

    def result(self, out: torch.Tensor | AttackOutput) -> AttackResult:
        """Re-project the core's output onto the threat model and recompute success and distance on it.

        ``x_adv`` comes back in the container and dtype of the caller's ``x``, inside the box in that dtype too
        (a float64 copy of a float32 point on the edge ``0.3`` is clamped to ``0.3``, which is the same float32
        point); with ``eps = 0`` it is a copy of ``x`` itself.

        Success is checked by a forward pass at full precision (:func:`advlab.devices.full_precision`), whatever
        precision the classifier's forwards run at inside the attack: a point that only bf16 rounding pushes over
        the decision boundary is not a success. This forward was made before reduced precision existed (the
        success is recomputed on the returned point); it costs one float32 forward per attack call instead of one
        reduced-precision forward. A core that made this very forward already (the same point, no gradients, full
        precision: :attr:`AttackOutput.evaluated`) is not asked for it again.
        """
        if not isinstance(out, AttackOutput):
            out = AttackOutput(out)
        x_adv = self.threat.project(out.x_adv.detach().to(self.x.dtype), self.x)
        logits = self.known_logits(out, x_adv)
        if logits is None:
            with torch.no_grad(), devices.full_precision():
                logits = self.model(x_adv)
        validation.check_model_output(logits, self.x.shape[0], where="on x_adv")
        return AttackResult(
            x_adv=self.returned(x_adv),
            success=to_container(is_success(logits, self.labels, self.targeted), self.x_in),
            distance=to_container(self.threat.distance(x_adv, self.x), self.x_in),
            labels=self.labels.detach(),
            targeted=self.targeted,
            queries=to_container(out.queries, self.x_in),
            loss_trace=None if out.loss_trace is None else out.loss_trace.detach().cpu(),
            logits=logits.detach(),
            info=out.info,
            correct=to_container(self.correct, self.x_in),
        )

    def known_logits(self, out: AttackOutput, x_adv: torch.Tensor) -> torch.Tensor | None:
        """The logits of :attr:`AttackOutput.evaluated` where they are what the success check would compute on ``x_adv``.

        That is where ``x_adv`` (re-projected) is exactly the evaluated point and the core's forward ran as the
        check's does: every classifier in the model at full precision and uncompiled, no autocast around the attack.
        """
        if out.evaluated is None:
            return None
        point, logits = out.evaluated
        if point.shape != x_adv.shape or point.dtype != x_adv.dtype or not torch.equal(point, x_adv):
            return None
        if torch.is_autocast_enabled(x_adv.device.type):
            return None
        for m in self.model.modules():
            if isinstance(m, Classifier) and (m.precision != "fp32" or m.compile_enabled):
                return None
        return logits.detach()

    def returned(self, x_adv: torch.Tensor) -> ArrayLike:
        """``x_adv`` in the caller's container and dtype, inside the box in that dtype (``x`` itself at eps 0)."""
        if self.threat.eps == 0:
            return self.x_in.copy() if isinstance(self.x_in, np.ndarray) else self.x_in.detach().clone()
        lo, hi = self.threat.box
        out = to_container(x_adv, self.x_in, dtype=self.x_in.dtype)
        if out.dtype == x_adv.dtype:  # the attack's own dtype: projected and clamped already
            return out
        return np.clip(out, lo, hi) if isinstance(out, np.ndarray) else out.clamp(lo, hi)


@contextlib.contextmanager
def attack_boundary(
    model: nn.Module, x: Any, y: Any, threat: ThreatModel, goal: Goal | None
) -> Iterator[PreparedAttack]:
    """Validate and convert the inputs, enter attack mode and resolve the goal, for the ``with`` block.

    Inside the block the model is in eval mode with parameter gradients off; the caller runs its core on the
    :class:`PreparedAttack` (whose ``threat`` has the model's bounds when ``threat`` had none) and builds the
    result with :meth:`PreparedAttack.result`.
    """
    goal = as_goal(goal)
    clf, x_t, y_t, threat = prepare_inputs(model, x, y, threat)
    x_in = x if isinstance(x, (torch.Tensor, np.ndarray)) else x_t.cpu()
    with clf.attack_mode():
        with devices.full_precision():  # what success rates count (the clean predictions) and the goal's targets
            with torch.no_grad():
                clean_logits = clf(x_t)
            validation.check_model_output(clean_logits, x_t.shape[0])
            check_suspicious_outputs(clean_logits)
            num_classes = clf.num_classes or clean_logits.shape[1]
            if clf.num_classes is None:
                validation.check_labels(y_t, x_t.shape[0], num_classes)
            labels = goal.resolve(clf, x_t, y_t, num_classes)
            correct = clean_logits.argmax(1) == y_t
        yield PreparedAttack(clf, x_t, labels, goal.targeted, threat, x_in, correct)


def run_attack(
    core: Callable[..., torch.Tensor | AttackOutput],
    model: nn.Module,
    x: Any,
    y: Any,
    threat: ThreatModel,
    *,
    goal: Goal | None,
    **settings: Any,
) -> AttackResult:
    """Run ``core`` behind the shared boundary (validation, conversion, attack mode, re-projection).

    Args:
        core: the algorithm, ``core(model, x, labels, targeted, threat, **settings)`` returning ``x_adv`` or an
            :class:`AttackOutput`; not called when ``threat.eps == 0`` (``x`` is returned unchanged).
        model: a ``torch.nn.Module`` returning logits, or an :class:`~advlab.models.Classifier`.
        x: inputs inside ``threat.bounds``, torch or numpy, shape ``(N, ...)``; or, with ``y=None``, a container
            of inputs and labels (a Dataset, ``DataLoader``, ``TensorDataset``, dict or pair, see
            :func:`advlab.validation.as_xy`), whose results come back as CPU tensors.
        y: true labels, shape ``(N,)`` (a tensor, an array or a list of ints), or ``None`` when ``x`` holds them.
        threat: the allowed perturbation set; without bounds it takes the model's.
        goal: ``None``/``Untargeted()``, ``Targeted(target)`` or ``LeastLikely()``.
        settings: the core's settings, already validated by the attack's registration.

    Returns:
        AttackResult with ``x_adv`` in the container (numpy/torch, device) of ``x``.
    """
    with attack_boundary(model, x, y, threat, goal) as run:
        check_randomness_rows(settings.get("generator"), run.x.shape[0])
        if threat.eps == 0:
            return run.result(run.x.clone())
        return run.result(core(run.model, run.x, run.labels, run.targeted, run.threat, **settings))


def check_randomness_rows(rng: Any, n: int) -> None:
    """Per-example streams must have one stream per example of the batch.

    Raises:
        ValueError: an :class:`~advlab.rng.ExampleRNG` with another number of rows than the batch.
    """
    if isinstance(rng, ExampleRNG) and len(rng) != n:
        raise ValueError(
            f"generator: an ExampleRNG with {len(rng)} streams for a batch of {n} examples; give it the ids of the "
            "batch's examples, one per row"
        )


def warn_once_zero_grad(grad: torch.Tensor, name: str) -> None:
    """Warn when every input gradient is exactly zero (a sign of gradient masking or a saturated softmax)."""
    if not bool(grad.any()):
        validation.warn(
            f"{name}: the input gradient is zero for every example; the attack cannot move. The model may mask "
            "gradients (e.g. a softmax output, a non-differentiable preprocessing); try a black-box attack.",
        )


class Attack(Protocol):
    """Anything called like an attack function with its settings bound: a config (``PGD(steps=40)``)."""

    def __call__(
        self,
        model: nn.Module,
        x: Any,
        y: Any,
        threat: ThreatModel,
        *,
        goal: Goal | None = ...,
        generator: Randomness = ...,
    ) -> AttackResult: ...


def attack_in_batches(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
    batch_size: int | Literal["auto"] = 250,
    seed: int = DEFAULT_SEED,
    progress: Callable[[int], None] | None = None,
) -> AttackResult:
    """Run ``attack`` over ``x`` in batches and concatenate the results (torch tensors).

    Example ``i`` draws from its own stream, keyed by ``(seed, i)`` (:class:`~advlab.rng.ExampleRNG`), so its
    result does not depend on ``batch_size`` or on what ran before. ``progress`` is called with the number of
    examples done after each batch. A batch that runs out of CUDA memory is halved and run again
    (:class:`advlab.devices.Batches`), and so are the batches after it; its examples keep their streams.

    Args:
        attack: the attack with its settings (``PGD(steps=40)``).
        model: the model.
        x: the inputs.
        y: the true labels.
        threat: the threat model.
        goal: the goal (``None``: untargeted); a targeted goal's targets cover all of ``x``.
        batch_size: examples per attack call, or ``"auto"``: the largest batch that fits the device
            (:func:`probe_batch_size`).
        seed: the base seed of the batches' generators.
        progress: called with the number of examples done after each batch.

    Returns:
        The attack's result on all of ``x``.

    Examples:
        >>> result = attack_in_batches(PGD(steps=40), model, x, y, ThreatModel("linf", 0.3), batch_size="auto")
    """
    if batch_size == "auto":
        batch_size = probe_batch_size([attack], model, x, y, threat, goal=goal)
    batch_size = validation.check_int("batch_size", batch_size, minimum=1)
    seed = validation.check_int("seed", seed, minimum=0)
    device = device_of(model) if isinstance(model, nn.Module) else x.device
    n = x.shape[0]

    def one_batch(start: int, stop: int) -> AttackResult:
        sub_goal = as_goal(goal).subset(torch.arange(start, stop))
        rng = ExampleRNG(seed, BATCHED_STAGE, torch.arange(start, stop), device=device)
        return attack(model, x[start:stop], y[start:stop], threat, goal=sub_goal, generator=rng)

    parts = devices.Batches(batch_size).run(one_batch, n, progress)

    def cat(name: str) -> torch.Tensor | None:
        vals = [getattr(p, name) for p in parts]
        return None if any(v is None for v in vals) else torch.cat([torch.as_tensor(v) for v in vals])

    return AttackResult(
        x_adv=torch.cat([torch.as_tensor(p.x_adv) for p in parts]),
        success=torch.cat([torch.as_tensor(p.success) for p in parts]),
        distance=torch.cat([torch.as_tensor(p.distance) for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        targeted=parts[0].targeted,
        queries=cat("queries"),
        loss_trace=parts[0].loss_trace,
        logits=cat("logits"),
        correct=cat("correct"),
    )


PROBE_SETTINGS = {"steps": 2, "restarts": 1, "binary_search_steps": 1, "n_target_classes": 1, "max_queries": 20}
"""The settings :func:`probe_batch_size` shortens an attack to: the memory of an attack's iteration does not
depend on how many iterations, restarts or queries it makes."""


def probe_batch_size(
    attacks: Sequence[Attack],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    goal: Goal | None = None,
) -> int:
    """The largest batch on which every attack of ``attacks`` fits the memory of the model's device.

    Each attack runs shortened (:data:`PROBE_SETTINGS`) on the first examples of ``x`` in batches of growing
    size (:func:`advlab.devices.auto_batch_size`), at most ``len(x)``; off CUDA the answer is
    :data:`advlab.devices.CPU_BATCH_SIZE` without a probe.

    Args:
        attacks: the attacks with their settings (configs such as ``APGD(steps=100)``).
        model: the model, with its precision (a bf16 model fits larger batches).
        x: the inputs (the probe takes the first ones).
        y: their labels.
        threat: the threat model.
        goal: the goal (``None``: untargeted).

    Returns:
        The batch size.

    Examples:
        >>> size = probe_batch_size([APGD(), Square()], model, x, y, ThreatModel("linf", 8 / 255))
    """
    short = [shortened(a) for a in attacks]

    def try_batch(size: int) -> None:
        sub_goal = as_goal(goal).subset(torch.arange(size))
        for attack in short:
            attack(model, x[:size], y[:size], threat, goal=sub_goal, generator=DEFAULT_SEED)

    return devices.auto_batch_size(try_batch, device_of(model), cap=x.shape[0])


def shortened(attack: Attack) -> Attack:
    """``attack`` with the iteration counts of :data:`PROBE_SETTINGS` where it has them and they are larger."""
    replace, current = getattr(attack, "replace", None), getattr(attack, "settings", None)
    if replace is None or current is None:
        return attack
    values = current()
    short = {k: v for k, v in PROBE_SETTINGS.items() if k in values and (values[k] is None or values[k] > v)}
    short = {k: v for k, v in short.items() if not (k == "max_queries" and values[k] is None)}
    try:
        return cast(Attack, replace(**short))
    except (ValueError, TypeError):  # a setting the attack constrains otherwise: probe it as it is
        return attack
