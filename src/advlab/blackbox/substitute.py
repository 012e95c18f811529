"""The practical black-box attack of Papernot et al. 2017: train a substitute on oracle labels, attack it, transfer.

The attacker can only query the target (an :class:`advlab.blackbox.Oracle`) for labels. Starting from a small
seed set ``S_0``, each substitute round ``p``:

1. labels the new points of ``S_p`` by querying the oracle (each point is queried once, ever);
2. trains the substitute ``F`` on ``{(x, O(x)) : x in S_p}`` (continuing from the previous round's weights);
3. augments with Jacobian-based dataset augmentation: ``S_{p+1} = S_p ∪ {x + λ_p · sign(J_F[O(x)](x))}``, where
   ``J_F[O(x)]`` is the gradient of the substitute's logit for the oracle's label and
   ``λ_p = λ · (-1)^⌊p / τ⌋`` (periodic step size, section 6). With reservoir sampling (``sigma``), from round
   ``σ`` on only ``κ`` points drawn at random from ``S_p`` are augmented, so the oracle answers
   ``|S_0| · 2^σ + κ (ρ - σ)`` queries in all instead of ``|S_0| · 2^ρ``.

Then adversarial examples are crafted on the substitute with any registered white-box attack (FGSM in the
paper) and sent to the oracle; the transfer success rate is the fraction the oracle misclassifies.

This is not an ``x -> x_adv`` attack of the :data:`~advlab.attacks.ATTACKS` registry but a procedure over an
oracle, so it is a function returning a :class:`SubstituteResult`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advlab import validation
from advlab.models import Classifier
from advlab.threat import ThreatModel

if TYPE_CHECKING:  # imported lazily at run time: advlab.blackbox imports this module
    from advlab.oracles import Oracle

log = logging.getLogger(__name__)

DEFAULT_SUBSTITUTE = "mlp"
DEFAULT_SUBSTITUTE_KWARGS = {"hidden": (200, 200)}
"""The substitute of Papernot et al.'s reference code for MNIST: FC200-ReLU-FC200-ReLU-FC10."""
PAPER_LR = 1e-2
PAPER_MOMENTUM = 0.9  # SGD momentum used by the defenses' "sgd" optimiser
PAPER_EPOCHS = 10
"""Section 4.1: each substitute round trains for 10 epochs, learning rate 1e-2, momentum 0.9."""


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


def _build_substitute(
    substitute: nn.Module | str,
    input_shape: tuple[int, ...],
    num_classes: int,
    bounds: tuple[float, float],
    seed: int,
    arch_kwargs: dict[str, Any] | None,
) -> Classifier:
    if isinstance(substitute, str):
        from advlab import zoo

        kwargs = dict(DEFAULT_SUBSTITUTE_KWARGS) if substitute == DEFAULT_SUBSTITUTE and arch_kwargs is None else {}
        kwargs.update(arch_kwargs or {})
        return zoo.build_classifier(substitute, input_shape, num_classes, bounds=bounds, seed=seed, **kwargs)
    if isinstance(substitute, nn.Module):
        module = copy.deepcopy(substitute.module if isinstance(substitute, Classifier) else substitute)
    else:
        raise TypeError(
            f"substitute: expected an architecture name (e.g. 'mlp', 'wong-cnn') or a torch.nn.Module, "
            f"got {type(substitute).__name__}"
        )
    return Classifier(module, bounds=bounds, num_classes=num_classes, input_shape=input_shape)


class _LabelledSet:
    """The substitute's training set with cached oracle labels; counts the training queries."""

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.queries = 0
        self.exhausted = False

    def add(self, x_new: torch.Tensor) -> int:
        """Label as many of ``x_new`` as the budget allows and add them; returns how many were added."""
        from advlab.oracles import BudgetExceeded

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
        x_new = x_new.detach().cpu()
        self.x = x_new if self.x is None else torch.cat([self.x, x_new])
        self.y = y_new if self.y is None else torch.cat([self.y, y_new])
        return x_new.shape[0]


def papernot_blackbox(
    oracle: Oracle,
    seed_x: Any,
    substitute: nn.Module | str = DEFAULT_SUBSTITUTE,
    *,
    rounds: int = 6,
    lam: float = 0.1,
    tau: int | None = 3,
    sigma: int | None = None,
    kappa: int = 400,
    epochs: int = PAPER_EPOCHS,
    lr: float = PAPER_LR,
    batch_size: int = 32,
    eps: float = 0.3,
    norm: str = "linf",
    attack: str = "fgsm",
    attack_options: dict[str, Any] | None = None,
    x_test: Any = None,
    y_test: Any = None,
    eval_every_round: bool = True,
    arch_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> SubstituteResult:
    """Papernot et al.'s practical black-box attack: substitute training by Jacobian augmentation, then transfer.

    Args:
        oracle: the target, any :class:`advlab.blackbox.Oracle` (``TorchOracle`` locally, ``HTTPOracle``
            remotely); only its labels are used. Every query counts against its budget; when the budget runs
            out the procedure stops gracefully and reports what it had (``budget_exhausted``).
        seed_x: the initial substitute training set ``S_0`` ``(N, ...)`` inside the oracle's bounds (the paper
            uses 150 MNIST test images, disjoint from the evaluation images).
        substitute: an architecture name from :mod:`advlab.zoo` (default ``"mlp"`` with two hidden layers of
            200 units, the paper's reference substitute) or a ``torch.nn.Module`` (copied, never modified).
        rounds: number of augmentation rounds ``ρ``; the substitute is trained ``rounds + 1`` times, on
            ``S_0 .. S_ρ``.
        lam: Jacobian augmentation step ``λ`` (0.1 in the paper).
        tau: period of the step-size sign flip, ``λ_p = λ (-1)^⌊p/τ⌋`` (``None``: constant ``λ``).
        sigma: first round of reservoir sampling (``None``: always augment every point, doubling ``S``).
        kappa: points augmented per round from round ``sigma`` on.
        epochs: training epochs per round (10 in the paper); lr: SGD learning rate (1e-2, momentum 0.9).
        batch_size: substitute training batch size.
        eps: radius of the transfer attack on the substitute (0.3 for MNIST in the paper).
        norm: threat norm of the transfer attack.
        attack: any registered white-box attack name (``"fgsm"`` in the paper; ``"pgd"``, ``"mifgsm"``...).
        attack_options: settings of that attack (e.g. ``{"steps": 20}``).
        x_test, y_test: evaluation data (true labels); measuring agreement and transfer costs oracle queries,
            reported separately as ``eval_queries``.
        eval_every_round: evaluate after every round (else only after the last one).
        arch_kwargs: keyword arguments of the substitute architecture.
        seed: seeds the substitute's initialisation, the data order, reservoir draws and the attack.
        device: where the substitute trains (default cpu).
        progress: show training progress bars (on a terminal).

    Returns:
        SubstituteResult with the trained substitute, per-round measurements and the final transfer success.

    Raises:
        TypeError: ``oracle`` is not an Oracle, or ``substitute`` is neither a name nor a module.
        ValueError: bad settings, seed inputs outside the oracle's bounds or of the wrong shape, or a budget too
            small for even one seed point.

    References:
        Papernot, McDaniel, Goodfellow, Jha, Celik & Swami, "Practical Black-Box Attacks against Machine
        Learning", arXiv:1602.02697 (Algorithm 1; periodic step size and reservoir sampling, section 6).

    Example:
        >>> oracle = TorchOracle(target_model, mode="labels", budget=20_000)
        >>> res = papernot_blackbox(oracle, x_test[:150], rounds=6, x_test=x_test[150:1150], y_test=y_test[150:1150])
        >>> res.transfer_success, res.queries
    """
    from advlab.attacks.base import make_generator
    from advlab.attacks.registry import make_attack
    from advlab.defenses.standard import StandardTraining
    from advlab.oracles import BudgetExceeded, Oracle

    if not isinstance(oracle, Oracle):
        raise TypeError(
            f"oracle: expected an advlab.blackbox.Oracle (TorchOracle, SklearnOracle, HTTPOracle...), got "
            f"{type(oracle).__name__}. Wrap a local model with advlab.blackbox.TorchOracle(model, mode='labels')."
        )
    rounds = validation.check_int("rounds", rounds, minimum=0)
    lam = validation.check_float("lam", lam, minimum=0.0, strict_min=True)
    if tau is not None:
        tau = validation.check_int("tau", tau, minimum=1)
    if sigma is not None:
        sigma = validation.check_int("sigma", sigma, minimum=0)
    kappa = validation.check_int("kappa", kappa, minimum=1)
    epochs = validation.check_int("epochs", epochs, minimum=1)
    lr = validation.check_float("lr", lr, minimum=0.0, strict_min=True)
    batch_size = validation.check_int("batch_size", batch_size, minimum=1)
    seed = validation.check_int("seed", seed, minimum=0)
    threat = ThreatModel(norm, eps, oracle.bounds)
    attack_cfg = make_attack(attack, norm=norm, **dict(attack_options or {}))
    if not attack_cfg.needs_gradients:
        log.info("attack %r does not need gradients; it still runs on the substitute", attack)

    validation.check_tensor_like("seed_x", seed_x)
    x0 = torch.as_tensor(seed_x).float()
    validation.check_input(x0, oracle.bounds, name="seed_x")
    validation.check_input_shape(x0, oracle.input_shape, name="seed_x")
    has_test = x_test is not None
    if has_test:
        if y_test is None:
            raise ValueError("y_test: give the true labels of x_test (or leave both out)")
        validation.check_tensor_like("x_test", x_test)
        validation.check_tensor_like("y_test", y_test)
        xt = torch.as_tensor(x_test).float()
        yt = torch.as_tensor(y_test).long()
        validation.check_input(xt, oracle.bounds, name="x_test")
        validation.check_input_shape(xt, tuple(x0.shape[1:]), name="x_test")
        validation.check_labels(yt, xt.shape[0], oracle.num_classes, name="y_test")
    remaining = oracle.remaining()
    if remaining is not None and remaining < 1:
        raise ValueError(f"oracle: its query budget is exhausted ({oracle.queries} of {oracle.budget} spent)")

    dev = torch.device(device) if device is not None else torch.device("cpu")
    num_classes = oracle.num_classes
    if num_classes is None:
        raise ValueError("oracle: num_classes is unknown; create the oracle with num_classes=")
    input_shape = tuple(x0.shape[1:])
    sub = _build_substitute(substitute, input_shape, num_classes, oracle.bounds, seed, arch_kwargs).to(dev)
    gen = make_generator(seed)
    settings = {
        "substitute": substitute if isinstance(substitute, str) else type(substitute).__name__,
        "rounds": rounds,
        "lam": lam,
        "tau": tau,
        "sigma": sigma,
        "kappa": kappa,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "eps": eps,
        "norm": norm,
        "attack": attack,
        "attack_options": dict(attack_options or {}),
        "seed_size": int(x0.shape[0]),
        "seed": seed,
        "budget": oracle.budget,
    }

    data = _LabelledSet(oracle)
    data.add(x0)
    if data.x is None:
        raise ValueError("oracle: the budget does not allow labelling a single seed point")

    eval_queries = 0
    oracle_test: torch.Tensor | None = None
    eval_dead = False

    def query_eval(x: torch.Tensor) -> torch.Tensor | None:
        nonlocal eval_queries, eval_dead
        if eval_dead:
            return None
        remaining = oracle.remaining()
        if remaining is not None and remaining < x.shape[0]:
            log.warning("query budget: %d left, evaluation needs %d; skipping evaluation", remaining, x.shape[0])
            eval_dead = True
            return None
        try:
            out = oracle.predict(x.cpu())
        except BudgetExceeded:
            eval_dead = True
            return None
        eval_queries += x.shape[0]
        return out

    def craft() -> tuple[torch.Tensor, torch.Tensor | None]:
        res = attack_cfg(sub, xt.to(dev), yt.to(dev), threat, generator=make_generator(seed))
        x_adv = res.x_adv.detach().cpu()
        pred = query_eval(x_adv)
        return x_adv, None if pred is None else (pred != yt)

    history: list[SubstituteRound] = []
    final: dict[str, torch.Tensor | None] = {"x_adv": None, "fooled": None}

    def evaluate(record: SubstituteRound) -> None:
        nonlocal oracle_test
        with torch.no_grad():
            sub_pred = sub.predict(xt.to(dev)).cpu()
        record.substitute_accuracy = float((sub_pred == yt).float().mean())
        if oracle_test is None:
            oracle_test = query_eval(xt)
        if oracle_test is not None:
            record.agreement = float((sub_pred == oracle_test).float().mean())
        x_adv, fooled = craft()
        if fooled is not None:
            record.transfer_success = float(fooled.float().mean())
        final["x_adv"], final["fooled"] = x_adv, fooled
        record.eval_queries = eval_queries

    for p in range(rounds + 1):
        t0 = time.perf_counter()
        assert data.x is not None and data.y is not None
        trainer = StandardTraining(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer="sgd",
            seed=seed + p,
            device=dev,
            progress=progress,
        )
        trainer.fit(sub, (data.x, data.y))
        sub.eval()
        last = p == rounds or data.exhausted
        lam_p = None if last else step_size(lam, p, tau)
        record = SubstituteRound(round=p, train_size=int(data.x.shape[0]), queries=data.queries, step=lam_p)
        if has_test and (eval_every_round or last):
            evaluate(record)
        record.eval_queries = eval_queries
        log.info(
            "substitute round %d: |S|=%d queries=%d accuracy=%s agreement=%s transfer=%s",
            p,
            record.train_size,
            record.queries,
            *(
                "n/a" if v is None else f"{v:.3f}"
                for v in (record.substitute_accuracy, record.agreement, record.transfer_success)
            ),
        )
        history.append(record)
        if last:
            record.seconds = time.perf_counter() - t0
            break
        x_cur, y_cur = data.x, data.y
        if sigma is not None and p >= sigma and x_cur.shape[0] > kappa:
            pick = torch.randperm(x_cur.shape[0], generator=gen)[:kappa]
            x_cur, y_cur = x_cur[pick], y_cur[pick]
        x_new = jacobian_augmentation(sub, x_cur.to(dev), y_cur.to(dev), lam_p, oracle.bounds)
        added = data.add(x_new)
        record.seconds = time.perf_counter() - t0
        if added == 0:  # the budget is spent: the substitute of this round is the final one
            record.step = None
            if has_test and not eval_every_round:
                evaluate(record)
            break
    x_adv_final, fooled_final = final["x_adv"], final["fooled"]
    assert data.x is not None and data.y is not None
    return SubstituteResult(
        substitute=sub,
        rounds=history,
        queries=data.queries,
        eval_queries=eval_queries,
        x_train=data.x,
        y_train=data.y,
        x_adv=x_adv_final,
        oracle_fooled=fooled_final,
        transfer_success=None if fooled_final is None else float(fooled_final.float().mean()),
        budget_exhausted=data.exhausted or eval_dead,
        settings=settings,
    )
