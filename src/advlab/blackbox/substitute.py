"""The practical black-box attack of Papernot et al. 2017: train a substitute on oracle labels, attack it, transfer.

The attacker can only query the target (an :class:`advlab.blackbox.Oracle`) for labels. Starting from a small
seed set ``S_0``, each substitute round ``p``:

1. labels the new points of ``S_p`` by querying the oracle (each point is queried once, ever);
2. trains the substitute ``F`` on ``{(x, O(x)) : x in S_p}`` (continuing from the previous round's weights);
3. augments ``S_p`` with one new point per point (``augmentation``):

   * ``"jacobian"`` (the paper's): ``x + λ_p · sign(J_F[O(x)](x))``, where ``J_F[O(x)]`` is the gradient of the
     substitute's logit for the oracle's label and ``λ_p = λ · (-1)^⌊p / τ⌋`` (periodic step size, section 6);
   * ``"targeted"`` (the default; Juuti et al. 2019's T-RND): ``augment_steps`` steps of size ``λ / steps``
     along ``sign(∇(F_t - F_{O(x)}))`` toward a random other class ``t``, so that the new points cross the
     substitute's boundary and the oracle's answers carry new information.

   With reservoir sampling (``sigma``), from round ``σ`` on only ``κ`` points drawn at random from ``S_p`` are
   augmented, so the oracle answers ``|S_0| · 2^σ + κ (ρ - σ)`` queries in all instead of ``|S_0| · 2^ρ``.

Then adversarial examples are crafted on the substitute with any registered white-box attack (``attack``; FGSM in
the paper, PGD on the logit margin by default) and sent to the oracle; the transfer success rate is the fraction
the oracle misclassifies.

Why the defaults differ from the paper's: against convolutional oracles the paper's augmentation adds no
information. Its step *raises* the substitute's logit of the point's own label, so the oracle gives the new point
its parent's label (0.0% of the new points changed label in rounds 0-2 against a 2-epoch ``madry-cnn``, 6% at
most later): ``S_p`` holds 150 labels however large it grows, and training on points pushed along the
substitute's own gradient sign is FGSM-like adversarial training of the substitute, which masks its gradients
(FGSM's white-box success on the substitute fell from 100% to 77%) so that FGSM transfer *falls* with rounds.
Targeted steps change the oracle's label of most new points (28-98% per round, rising), the substitute's agreement
keeps rising (76% -> 93%) and so does transfer; a CNN substitute and an iterative attack transfer far better to CNN
oracles than the FC200-200 substitute and FGSM. See BENCHMARKS.md, "Papernot".

This is not an ``x -> x_adv`` attack of the :data:`~advlab.attacks.ATTACKS` registry but a procedure over an
oracle: :class:`SubstituteAttack` holds its steps, :class:`SubstituteSettings` its settings, and
:func:`papernot_blackbox` runs it and returns a :class:`SubstituteResult`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import torch
from torch import nn

from advlab import settings as settings_mod
from advlab import validation, zoo
from advlab.attacks.base import make_generator
from advlab.attacks.registry import make_attack
from advlab.defenses.standard import StandardTraining
from advlab.models import Classifier, predict
from advlab.oracles import BudgetExceeded, Oracle
from advlab.settings import NonNegativeFloat, NonNegativeInt, OneOf, PositiveFloat, PositiveInt
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

DEFAULT_SUBSTITUTE = "auto"
"""The default substitute: ``"wong-cnn"`` (a small CNN, which transfers to CNN oracles far better than an MLP) for
image inputs ``(C, H, W)``, the paper's ``"mlp"`` otherwise (:func:`default_substitute`)."""
PAPER_SUBSTITUTE = "mlp"
PAPER_SUBSTITUTE_KWARGS = {"hidden": (200, 200)}
"""The substitute of Papernot et al.'s reference code for MNIST: FC200-ReLU-FC200-ReLU-FC10 (``"mlp"`` by name)."""
PAPER_LR = 1e-2
PAPER_MOMENTUM = 0.9  # SGD momentum used by the defenses' "sgd" optimiser
PAPER_EPOCHS = 10
"""Section 4.1: each substitute round trains for 10 epochs, learning rate 1e-2, momentum 0.9."""
DEFAULT_ATTACK = "pgd"
DEFAULT_ATTACK_OPTIONS: Mapping[str, Any] = {"steps": 100, "loss": "margin"}
"""Settings of the default attack on the substitute: 100 PGD steps on the logit margin (examples pushed far past
the substitute's boundary transfer better than FGSM's), each of ``eps / 30`` (:data:`DEFAULT_STEP_FRACTION`; 0.01
at eps 0.3); options given by the user update these."""
DEFAULT_STEP_FRACTION = 1 / 30
AUGMENTATIONS = ("targeted", "jacobian")
OWNER = "papernot_blackbox"
"""The name settings errors are reported under."""


@dataclass(frozen=True, kw_only=True)
class SubstituteSettings:
    """Settings of Papernot et al.'s substitute attack, validated once when created.

    Args:
        rounds: number of augmentation rounds ``ρ``; the substitute is trained ``rounds + 1`` times, on
            ``S_0 .. S_ρ``.
        augmentation: ``"targeted"`` (steps toward a random other class, the default) or ``"jacobian"`` (the
            paper's step along the label's Jacobian row).
        lam: augmentation step ``λ``: the linf distance of a new point from its parent (0.1 in the paper, 0.3 by
            default with ``"targeted"``).
        tau: period of the step-size sign flip of ``"jacobian"``, ``λ_p = λ (-1)^⌊p/τ⌋`` (``None``: constant ``λ``;
            the paper's is 3).
        augment_steps: steps of ``"targeted"`` augmentation (each of ``λ / augment_steps``).
        sigma: first round of reservoir sampling (``None``: always augment every point, doubling ``S``).
        kappa: points augmented per round from round ``sigma`` on.
        epochs: training epochs per round (10 in the paper; 30 by default, as a CNN substitute trained 10 epochs
            on the 150 seeds stays near chance).
        lr: SGD learning rate of the substitute (1e-2 in the paper, momentum 0.9).
        batch_size: substitute training batch size.
        eps: radius of the transfer attack on the substitute (0.3 for MNIST in the paper).
        norm: threat norm of the transfer attack.
        attack: any registered white-box attack name (``"pgd"`` by default, ``"fgsm"`` in the paper, ``"mifgsm"``...).
        attack_options: settings of that attack (e.g. ``{"steps": 20}``); for the default ``"pgd"`` they update
            :data:`DEFAULT_ATTACK_OPTIONS` (100 steps of ``eps / 30`` on the margin loss).
        eval_every_round: evaluate after every round (else only after the last one).
        arch_kwargs: keyword arguments of the substitute architecture.
        seed: seeds the substitute's initialisation, the data order, reservoir draws and the attack.
        device: where the substitute trains (default cpu).
        progress: show training progress bars (on a terminal).

    Raises:
        TypeError, ValueError: a setting of the wrong type or out of range, naming it.

    Examples:
        >>> SubstituteSettings(rounds=4, sigma=2, kappa=200).rounds
        4
    """

    rounds: NonNegativeInt = 6
    augmentation: Annotated[str, OneOf(AUGMENTATIONS)] = "targeted"
    lam: PositiveFloat = 0.3
    tau: PositiveInt | None = None
    augment_steps: PositiveInt = 5
    sigma: NonNegativeInt | None = None
    kappa: PositiveInt = 400
    epochs: PositiveInt = 30
    lr: PositiveFloat = PAPER_LR
    batch_size: PositiveInt = 32
    eps: NonNegativeFloat = 0.3
    norm: str = "linf"
    attack: str = DEFAULT_ATTACK
    attack_options: Mapping[str, Any] | None = None
    eval_every_round: bool = True
    arch_kwargs: Mapping[str, Any] | None = None
    seed: NonNegativeInt = 0
    device: str | torch.device | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in settings_mod.validate_all(OWNER, SETTINGS, values).items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SubstituteSettings:
        """Build from keyword settings; an unknown name raises ``TypeError`` listing the known ones.

        Raises:
            TypeError: an unknown setting (with a "did you mean" hint for another library's name), or a bad type.
            ValueError: a setting out of range.
        """
        return cls(**settings_mod.validate_all(OWNER, SETTINGS, options))

    def attack_settings(self) -> dict[str, Any]:
        """The settings the attack runs with: :data:`DEFAULT_ATTACK_OPTIONS` for the default attack, updated
        by ``attack_options``."""
        base: dict[str, Any] = {}
        if self.attack == DEFAULT_ATTACK:
            base = dict(DEFAULT_ATTACK_OPTIONS)
            if self.eps > 0:
                base["step_size"] = self.eps * DEFAULT_STEP_FRACTION
        return {**base, **dict(self.attack_options or {})}

    def record(self, substitute: nn.Module | str, seed_size: int, budget: int | None) -> dict[str, Any]:
        """The settings of a run as a JSON-friendly dict (with the substitute's name, seed size and budget)."""
        return {
            "substitute": substitute if isinstance(substitute, str) else type(substitute).__name__,
            "rounds": self.rounds,
            "augmentation": self.augmentation,
            "lam": self.lam,
            "tau": self.tau,
            "augment_steps": self.augment_steps,
            "sigma": self.sigma,
            "kappa": self.kappa,
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "eps": self.eps,
            "norm": self.norm,
            "attack": self.attack,
            "attack_options": self.attack_settings(),
            "seed_size": seed_size,
            "seed": self.seed,
            "budget": budget,
        }


PAPER_SETTINGS: Mapping[str, Any] = {
    "augmentation": "jacobian",
    "lam": 0.1,
    "tau": 3,
    "epochs": PAPER_EPOCHS,
    "attack": "fgsm",
}
"""Papernot et al.'s settings (with ``substitute="mlp"``); the defaults differ, see the module docstring."""

SETTINGS = settings_mod.settings_of(SubstituteSettings)
"""The declared settings of :class:`SubstituteSettings` (name, default, constraint, help text)."""


@dataclass
class SubstituteRound:
    """Measurements after training the substitute of round ``round`` (``round`` 0 trains on the seed set).

    Attributes:
        round: substitute training round ``p``.
        train_size: ``|S_p|``, the points the substitute was trained on.
        queries: training queries spent so far (cumulative; each point of ``S_p`` labelled once).
        step: ``λ_p`` used to build ``S_{p+1}`` (``None`` after the last round).
        substitute_accuracy: substitute's accuracy on the test set's true labels.
        agreement: fraction of test points where substitute and oracle predict the same class.
        transfer_success: fraction of adversarial test points (crafted on this substitute) the oracle
            misclassifies; ``None`` when not evaluated this round.
        eval_queries: evaluation queries spent so far (test labels and transfer checks, cumulative).
        seconds: wall time of the round.
    """

    round: int
    train_size: int
    queries: int
    step: float | None
    substitute_accuracy: float | None = None
    agreement: float | None = None
    transfer_success: float | None = None
    eval_queries: int = 0
    seconds: float = 0.0


@dataclass
class SubstituteResult:
    """What :func:`papernot_blackbox` returns.

    Attributes:
        substitute: the trained substitute (a :class:`~advlab.models.Classifier`).
        rounds: one :class:`SubstituteRound` per training round.
        queries: training queries spent (labels of the substitute's training set).
        eval_queries: queries spent on evaluation (oracle labels of the test set, transfer checks).
        x_train, y_train: the final substitute training set and its oracle labels.
        x_adv: adversarial test inputs crafted on the final substitute (``None`` without test data).
        oracle_fooled: per test example, whether the oracle misclassifies ``x_adv`` (true label).
        transfer_success: fraction of test examples whose adversarial version fools the oracle.
        budget_exhausted: the oracle's budget stopped the procedure early.
        settings: the settings used (JSON-friendly).
    """

    substitute: Classifier
    rounds: list[SubstituteRound]
    queries: int
    eval_queries: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_adv: torch.Tensor | None = None
    oracle_fooled: torch.Tensor | None = None
    transfer_success: float | None = None
    budget_exhausted: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Numbers and settings as a JSON-friendly dict (no tensors)."""
        return {
            "queries": self.queries,
            "eval_queries": self.eval_queries,
            "transfer_success": self.transfer_success,
            "budget_exhausted": self.budget_exhausted,
            "train_size": int(self.x_train.shape[0]),
            "rounds": [asdict(r) for r in self.rounds],
            "settings": self.settings,
        }


def step_size(lam: float, p: int, tau: int | None) -> float:
    """``λ_p = λ · (-1)^⌊p / τ⌋`` (constant ``λ`` when ``tau`` is ``None``)."""
    if tau is None:
        return lam
    return lam * (-1) ** (p // tau)


def jacobian_augmentation(
    substitute: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    lam: float,
    bounds: tuple[float, float],
    batch_size: int = 256,
) -> torch.Tensor:
    """``clip(x + lam * sign(d F_label(x) / dx))``: new points along the substitute's Jacobian row of the label.

    Args:
        substitute: the model (logits); evaluated in eval mode, parameters untouched.
        x: points ``(N, ...)``; labels: the oracle's labels ``(N,)``.
        lam: signed step size.
        bounds: input box the new points are clipped to (the oracle refuses points outside it).

    Returns:
        The new points, shape of ``x``.
    """
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].detach().clone().requires_grad_(True)
        logits = substitute(xb)
        (grad,) = torch.autograd.grad(logits.gather(1, labels[i : i + batch_size, None]).sum(), xb)
        out.append((xb.detach() + lam * grad.sign()).clamp(bounds[0], bounds[1]))
    return torch.cat(out)


def targeted_augmentation(
    substitute: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    lam: float,
    bounds: tuple[float, float],
    *,
    steps: int = 5,
    batch_size: int = 256,
) -> torch.Tensor:
    """``steps`` steps of ``lam / steps`` along ``sign(d (F_target - F_label) / dx)``, clipped to the box.

    Juuti et al. 2019's T-RND synthetic samples: each point moves toward another class of the substitute, so
    the oracle's label of the new point often differs from its parent's (new information), unlike the paper's
    Jacobian step, which moves deeper into the label's own region.

    Args:
        substitute: the model (logits); evaluated as given, parameters untouched.
        x: points ``(N, ...)``.
        labels: the oracle's labels of ``x`` ``(N,)``.
        targets: the class each point moves toward ``(N,)``.
        lam: total linf distance moved (the sum of the steps).
        bounds: input box the new points are clipped to (the oracle refuses points outside it).
        steps: number of steps.
        batch_size: points per gradient computation.

    Returns:
        The new points, shape of ``x``.

    Examples:
        >>> new = targeted_augmentation(model, x, y, (y + 1) % 10, 0.3, (0.0, 1.0))
    """
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].detach()
        yb, tb = labels[i : i + batch_size, None], targets[i : i + batch_size, None]
        for _ in range(steps):
            xb = xb.clone().requires_grad_(True)
            logits = substitute(xb)
            (grad,) = torch.autograd.grad((logits.gather(1, tb) - logits.gather(1, yb)).sum(), xb)
            xb = (xb.detach() + (lam / steps) * grad.sign()).clamp(bounds[0], bounds[1])
        out.append(xb)
    return torch.cat(out)


def random_targets(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label, a class drawn uniformly among the ``num_classes - 1`` others.

    Args:
        labels: class labels ``(N,)``.
        num_classes: number of classes.
        generator: the random stream the draws come from.

    Examples:
        >>> targets = random_targets(torch.tensor([0, 1]), 10, torch.Generator().manual_seed(0))
    """
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift) % num_classes


def default_substitute(input_shape: tuple[int, ...]) -> str:
    """The architecture ``substitute="auto"`` stands for: ``"wong-cnn"`` for images ``(C, H, W)``, else ``"mlp"``.

    Args:
        input_shape: the oracle's input shape, without the batch axis.

    Examples:
        >>> default_substitute((1, 28, 28)), default_substitute((64,))
        ('wong-cnn', 'mlp')
    """
    return "wong-cnn" if len(input_shape) == 3 and min(input_shape[1:]) >= 8 else PAPER_SUBSTITUTE


def build_substitute(
    substitute: nn.Module | str,
    input_shape: tuple[int, ...],
    num_classes: int,
    bounds: tuple[float, float],
    *,
    seed: int = 0,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> Classifier:
    """The substitute to train: a :mod:`advlab.zoo` architecture by name (``"auto"``: :func:`default_substitute`),
    or a copy of the module given.

    Raises:
        TypeError: ``substitute`` is neither a name nor a ``torch.nn.Module``.
    """
    if substitute == DEFAULT_SUBSTITUTE:
        substitute = default_substitute(input_shape)
    if isinstance(substitute, str):
        kwargs = dict(PAPER_SUBSTITUTE_KWARGS) if substitute == PAPER_SUBSTITUTE and arch_kwargs is None else {}
        kwargs.update(arch_kwargs or {})
        return zoo.build_classifier(substitute, input_shape, num_classes, bounds=bounds, seed=seed, **kwargs)
    if not isinstance(substitute, nn.Module):
        raise TypeError(
            f"substitute: expected an architecture name (e.g. 'mlp', 'wong-cnn') or a torch.nn.Module, "
            f"got {type(substitute).__name__}"
        )
    module = copy.deepcopy(substitute.module if isinstance(substitute, Classifier) else substitute)
    return Classifier(module, bounds=bounds, num_classes=num_classes, input_shape=input_shape)


class _LabelledSet:
    """The substitute's training set with cached oracle labels; counts the training queries."""

    def __init__(self, oracle: Oracle, like: torch.Tensor) -> None:
        self.oracle = oracle
        self.x = like[:0].detach().cpu()
        self.y = torch.empty(0, dtype=torch.int64)
        self.queries = 0
        self.exhausted = False

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def add(self, x_new: torch.Tensor) -> int:
        """Label as many of ``x_new`` as the budget allows and add them; returns how many were added."""
        remaining = self.oracle.remaining()
        if remaining is not None and remaining < x_new.shape[0]:
            log.warning(
                "query budget: only %d of %d new points can be labelled; stopping after this round",
                remaining,
                x_new.shape[0],
            )
            x_new = x_new[:remaining]
            self.exhausted = True
        if x_new.shape[0] == 0:
            self.exhausted = True
            return 0
        try:
            y_new = self.oracle.predict(x_new.cpu()).long()
        except BudgetExceeded:  # a remote limit we could not see in advance
            log.warning("query budget exhausted by the target; stopping")
            self.exhausted = True
            return 0
        self.queries += x_new.shape[0]
        self.x = torch.cat([self.x, x_new.detach().cpu()])
        self.y = torch.cat([self.y, y_new])
        return x_new.shape[0]


class SubstituteAttack:
    """Papernot et al.'s Algorithm 1 against one oracle; :meth:`run` reads as the list of its steps.

    Args:
        oracle: the target; only its labels are used, and every query counts against its budget.
        substitute: an :mod:`advlab.zoo` architecture name or a ``torch.nn.Module`` (copied, never modified).
        settings: the procedure's settings.

    Attributes:
        substitute_: the substitute ``F`` being trained (built by :meth:`run`).
        data: the training set ``S_p`` and its oracle labels.
        history: one :class:`SubstituteRound` per training round so far.
        x_adv, fooled: the adversarial test examples of the last evaluation and the oracle's verdict on them.

    Raises:
        TypeError: ``oracle`` is not an Oracle.
        ValueError: a bad norm, eps or attack.
    """

    substitute_: Classifier
    data: _LabelledSet

    def __init__(self, oracle: Oracle, substitute: nn.Module | str, settings: SubstituteSettings) -> None:
        if not isinstance(oracle, Oracle):
            raise TypeError(
                f"oracle: expected an advlab.blackbox.Oracle (TorchOracle, SklearnOracle, HTTPOracle...), got "
                f"{type(oracle).__name__}. Wrap a local model with advlab.blackbox.TorchOracle(model, mode='labels')."
            )
        self.oracle = oracle
        self.substitute = substitute
        self.settings = settings
        self.threat = ThreatModel(settings.norm, settings.eps, oracle.bounds)
        self.attack = make_attack(settings.attack, norm=settings.norm, **settings.attack_settings())
        if not self.attack.needs_gradients:
            log.info("attack %r does not need gradients; it still runs on the substitute", settings.attack)
        self.device = torch.device(settings.device) if settings.device is not None else torch.device("cpu")
        self.generator = make_generator(settings.seed)
        self.history: list[SubstituteRound] = []
        self.eval_queries = 0
        self.eval_exhausted = False
        self.x_test: torch.Tensor | None = None
        self.y_test: torch.Tensor | None = None
        self.oracle_test: torch.Tensor | None = None
        self.x_adv: torch.Tensor | None = None
        self.fooled: torch.Tensor | None = None

    def run(self, seed_x: Any, x_test: Any = None, y_test: Any = None) -> SubstituteResult:
        """Label the seed set, then train, evaluate and augment round after round; craft on the last substitute.

        Raises:
            ValueError: seed or test inputs outside the oracle's bounds or of the wrong shape, or a budget too
                small for even one seed point.
        """
        if self.history:
            raise RuntimeError("SubstituteAttack.run: an attack runs once; create a new SubstituteAttack")
        x0 = self.check_data(seed_x, x_test, y_test)
        self.label_seed_set(x0)  # an oracle over a plain module learns its number of classes from these answers
        num_classes = self.check_num_classes()
        self.substitute_ = build_substitute(
            self.substitute,
            tuple(x0.shape[1:]),
            num_classes,
            self.oracle.bounds,
            seed=self.settings.seed,
            arch_kwargs=self.settings.arch_kwargs,
        ).to(self.device)
        for p in range(self.settings.rounds + 1):
            if self.substitute_round(p):
                break
        return self.result(seed_size=int(x0.shape[0]))

    # ------------------------------------------------------------------ the steps
    def check_data(self, seed_x: Any, x_test: Any, y_test: Any) -> torch.Tensor:
        """The seed set as a float tensor inside the oracle's bounds; the test data kept for evaluation."""
        x0 = validation.as_xy(seed_x, "seed_x", labels="none")[0].float()
        validation.check_input(x0, self.oracle.bounds, name="seed_x")
        validation.check_input_shape(x0, self.oracle.input_shape, name="seed_x")
        if x_test is not None:
            if y_test is None:
                raise ValueError("y_test: give the true labels of x_test (or leave both out)")
            xt, yt = validation.as_xy((x_test, y_test), "x_test/y_test")
            assert yt is not None  # as_xy requires labels by default
            self.x_test, self.y_test = xt.float(), yt
            validation.check_input(self.x_test, self.oracle.bounds, name="x_test")
            validation.check_input_shape(self.x_test, tuple(x0.shape[1:]), name="x_test")
            validation.check_labels(yt, xt.shape[0], self.oracle.num_classes, name="y_test")
        remaining = self.oracle.remaining()
        if remaining is not None and remaining < 1:
            raise ValueError(
                f"oracle: its query budget is exhausted ({self.oracle.queries} of {self.oracle.budget} spent)"
            )
        return x0

    def check_num_classes(self) -> int:
        """The oracle's number of classes (known once it has answered), and the test labels checked against it."""
        if self.oracle.num_classes is None:
            raise ValueError("oracle: num_classes is unknown; create the oracle with num_classes=")
        if self.y_test is not None:
            validation.check_labels(self.y_test, self.y_test.shape[0], self.oracle.num_classes, name="y_test")
        return self.oracle.num_classes

    def label_seed_set(self, x0: torch.Tensor) -> None:
        """Step 1 on ``S_0``: the oracle labels the seed set."""
        self.data = _LabelledSet(self.oracle, x0)
        self.data.add(x0)
        if len(self.data) == 0:
            raise ValueError("oracle: the budget does not allow labelling a single seed point")

    def substitute_round(self, p: int) -> bool:
        """Train on ``S_p``, measure, and build ``S_{p+1}``; returns whether this round was the last."""
        t0 = time.perf_counter()
        self.train_substitute(p)
        last = p == self.settings.rounds or self.data.exhausted
        step = None if last else self.step(p)
        record = SubstituteRound(round=p, train_size=len(self.data), queries=self.data.queries, step=step)
        if self.settings.eval_every_round or last:
            self.evaluate_round(record)
        record.eval_queries = self.eval_queries
        _log_round(record)
        self.history.append(record)
        if step is None:
            record.seconds = time.perf_counter() - t0
            return True
        added = self.augment(p, step)
        record.seconds = time.perf_counter() - t0
        if added == 0:  # the budget is spent: the substitute of this round is the final one
            record.step = None
            if not self.settings.eval_every_round:
                self.evaluate_round(record)
            return True
        return False

    def train_substitute(self, p: int) -> None:
        """Step 2: train ``F`` on ``{(x, O(x)) : x in S_p}`` (SGD with momentum, from the previous weights)."""
        s = self.settings
        trainer = StandardTraining(
            epochs=s.epochs,
            batch_size=s.batch_size,
            lr=s.lr,
            optimizer="sgd",
            seed=s.seed + p,
            device=self.device,
            progress=s.progress,
        )
        trainer.fit(self.substitute_, (self.data.x, self.data.y))
        self.substitute_.eval()

    def step(self, p: int) -> float:
        """``λ_p``: the paper's periodic step for ``"jacobian"`` augmentation, ``λ`` for ``"targeted"``."""
        if self.settings.augmentation == "targeted":
            return self.settings.lam
        return step_size(self.settings.lam, p, self.settings.tau)

    def augment(self, p: int, step: float) -> int:
        """Step 3: augmentation (of ``κ`` random points from round ``σ`` on), labelled by the oracle.

        Returns:
            How many new points the oracle labelled (0 when the budget is spent).
        """
        s = self.settings
        x_cur, y_cur = self.data.x, self.data.y
        if s.sigma is not None and p >= s.sigma and x_cur.shape[0] > s.kappa:
            pick = torch.randperm(x_cur.shape[0], generator=self.generator)[: s.kappa]
            x_cur, y_cur = x_cur[pick], y_cur[pick]
        x_cur, y_cur = x_cur.to(self.device), y_cur.to(self.device)
        if s.augmentation == "jacobian":
            x_new = jacobian_augmentation(self.substitute_, x_cur, y_cur, step, self.oracle.bounds)
        else:
            targets = random_targets(y_cur, self.check_num_classes(), self.generator).to(self.device)
            x_new = targeted_augmentation(
                self.substitute_, x_cur, y_cur, targets, step, self.oracle.bounds, steps=s.augment_steps
            )
        return self.data.add(x_new)

    def evaluate_round(self, record: SubstituteRound) -> None:
        """Substitute accuracy, agreement with the oracle and transfer success on the test data (costs queries)."""
        xt, yt = self.x_test, self.y_test
        if xt is None or yt is None:
            return
        sub_pred = predict(self.substitute_, xt)
        record.substitute_accuracy = float((sub_pred == yt).float().mean())
        if self.oracle_test is None:
            self.oracle_test = self.ask_oracle(xt)
        if self.oracle_test is not None:
            record.agreement = float((sub_pred == self.oracle_test).float().mean())
        self.craft_examples(xt, yt)
        if self.fooled is not None:
            record.transfer_success = float(self.fooled.float().mean())
        record.eval_queries = self.eval_queries

    def craft_examples(self, xt: torch.Tensor, yt: torch.Tensor) -> None:
        """Adversarial test examples crafted on the substitute with the white-box attack; the oracle's verdict."""
        res = self.attack(
            self.substitute_,
            xt.to(self.device),
            yt.to(self.device),
            self.threat,
            generator=make_generator(self.settings.seed),
        )
        self.x_adv = torch.as_tensor(res.x_adv).detach().cpu()
        pred = self.ask_oracle(self.x_adv)
        self.fooled = None if pred is None else (pred != yt)

    def ask_oracle(self, x: torch.Tensor) -> torch.Tensor | None:
        """The oracle's labels for evaluation, counted apart; ``None`` (and no more evaluation) past the budget."""
        if self.eval_exhausted:
            return None
        remaining = self.oracle.remaining()
        if remaining is not None and remaining < x.shape[0]:
            log.warning("query budget: %d left, evaluation needs %d; skipping evaluation", remaining, x.shape[0])
            self.eval_exhausted = True
            return None
        try:
            out = self.oracle.predict(x.cpu())
        except BudgetExceeded:
            self.eval_exhausted = True
            return None
        self.eval_queries += x.shape[0]
        return out

    def result(self, seed_size: int) -> SubstituteResult:
        """The trained substitute, the rounds' measurements and the final transfer success."""
        return SubstituteResult(
            substitute=self.substitute_,
            rounds=self.history,
            queries=self.data.queries,
            eval_queries=self.eval_queries,
            x_train=self.data.x,
            y_train=self.data.y,
            x_adv=self.x_adv,
            oracle_fooled=self.fooled,
            transfer_success=None if self.fooled is None else float(self.fooled.float().mean()),
            budget_exhausted=self.data.exhausted or self.eval_exhausted,
            settings=self.settings.record(self.substitute, seed_size, self.oracle.budget),
        )


def _log_round(record: SubstituteRound) -> None:
    log.info(
        "substitute round %d: |S|=%d queries=%d accuracy=%s agreement=%s transfer=%s",
        record.round,
        record.train_size,
        record.queries,
        *(
            "n/a" if v is None else f"{v:.3f}"
            for v in (record.substitute_accuracy, record.agreement, record.transfer_success)
        ),
    )


def papernot_blackbox(
    oracle: Oracle,
    seed_x: Any,
    substitute: nn.Module | str = DEFAULT_SUBSTITUTE,
    *,
    x_test: Any = None,
    y_test: Any = None,
    **settings: Any,
) -> SubstituteResult:
    """Papernot et al.'s practical black-box attack: substitute training by Jacobian augmentation, then transfer.

    Args:
        oracle: the target, any :class:`advlab.blackbox.Oracle` (``TorchOracle`` locally, ``HTTPOracle``
            remotely); only its labels are used. Every query counts against its budget; when the budget runs
            out the procedure stops gracefully and reports what it had (``budget_exhausted``).
        seed_x: the initial substitute training set ``S_0`` ``(N, ...)`` inside the oracle's bounds (the paper
            uses 150 MNIST test images, disjoint from the evaluation images).
        substitute: an architecture name from :mod:`advlab.zoo`, ``"auto"`` (the default: ``"wong-cnn"`` for
            images, ``"mlp"`` otherwise) or a ``torch.nn.Module`` (copied, never modified); ``"mlp"`` has two
            hidden layers of 200 units, the paper's reference substitute.
        x_test: evaluation inputs; measuring agreement and transfer costs oracle queries, reported separately
            as ``eval_queries``.
        y_test: the true labels of ``x_test``.
        **settings: the settings of :class:`SubstituteSettings`, with its defaults: ``rounds=6``,
            ``augmentation="targeted"``, ``lam=0.3``, ``tau=None``, ``augment_steps=5``, ``sigma=None``,
            ``kappa=400``, ``epochs=30``, ``lr=1e-2``, ``batch_size=32``, ``eps=0.3``, ``norm="linf"``,
            ``attack="pgd"``, ``attack_options=None`` (100 steps of ``eps / 30`` on the margin loss),
            ``eval_every_round=True``, ``arch_kwargs=None``, ``seed=0``, ``device=None`` (cpu), ``progress=False``.
            The paper's setting is ``substitute="mlp", augmentation="jacobian", lam=0.1, tau=3, epochs=10,
            attack="fgsm"`` (:data:`PAPER_SETTINGS`).

    Returns:
        SubstituteResult with the trained substitute, per-round measurements and the final transfer success.

    Raises:
        TypeError: ``oracle`` is not an Oracle, ``substitute`` is neither a name nor a module, or an unknown
            setting.
        ValueError: bad settings, seed inputs outside the oracle's bounds or of the wrong shape, or a budget too
            small for even one seed point.

    References:
        Papernot, McDaniel, Goodfellow, Jha, Celik & Swami, "Practical Black-Box Attacks against Machine
        Learning", arXiv:1602.02697 (Algorithm 1; periodic step size and reservoir sampling, section 6).

    Examples:
        >>> oracle = TorchOracle(target_model, mode="labels", budget=20_000)
        >>> res = papernot_blackbox(oracle, x_test[:150], rounds=6, x_test=x_test[150:1150], y_test=y_test[150:1150])
        >>> res.transfer_success, res.queries
    """
    procedure = SubstituteAttack(oracle, substitute, SubstituteSettings.from_options(settings))
    return procedure.run(seed_x, x_test, y_test)
