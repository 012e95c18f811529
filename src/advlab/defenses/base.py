"""The trainer base class: settings, epochs, optimiser, learning-rate schedule, progress, per-epoch checkpoint and resume.

A defense subclasses :class:`Trainer`, declares its settings once as keyword-only parameters of its ``__init__``
(constraints in ``Annotated`` metadata, help text in the class docstring's ``Args:``), registers itself with
:func:`register_defense`, and overrides :meth:`Trainer.training_step`. Everything else lives here once: the
validation of every setting and its storage as an attribute of the same name, :meth:`Trainer.settings` (recorded in
the model card and the checkpoint's configuration), batching, schedules, evaluation, and checkpoints written
atomically after every epoch (one :class:`~advlab.checkpoint.Checkpoint` file), so a killed run resumes with no lost
epoch and a checkpoint of another configuration is refused. Inside an initialised ``torch.distributed`` process group
(``torchrun``) a fit is data-parallel with ``DistributedDataParallel`` (see :class:`Trainer`); ``precision`` trains
with autocast to bfloat16 or float16.

Examples:
    >>> @register_defense("label-smoothing")
    ... class LabelSmoothing(Trainer):
    ...     '''Cross-entropy against smoothed labels.
    ...
    ...     Args:
    ...         smoothing: probability mass moved from the true class to the others.
    ...     '''
    ...     def __init__(self, *, smoothing: Fraction = 0.1, **settings: Any) -> None:
    ...         super().__init__(**settings)  # smoothing is checked and stored as self.smoothing
    ...     def training_step(self, model, x, y, epoch):
    ...         logits = model(x)
    ...         return F.cross_entropy(logits, y, label_smoothing=self.smoothing), logits
    >>> LabelSmoothing(smoothing=0.2, epochs=3).settings()["smoothing"]
    0.2
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from advlab import distributed, validation
from advlab.checkpoint import Checkpoint
from advlab.defenses._runtime import (
    Precision,
    Replica,
    TrainingStep,
    data_fingerprint,
    synchronised_batch_norm,
)
from advlab.devices import PRECISIONS
from advlab.models import Classifier, as_classifier, predict
from advlab.registry import Registry
from advlab.settings import (
    Check,
    NonNegativeFloat,
    NonNegativeInt,
    OneOf,
    PositiveFloat,
    PositiveInt,
    Setting,
    docstring_args,
    rename_deprecated,
    settings_of,
    validate_all,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.safetensors"
"""The one checkpoint file a trainer writes in its ``checkpoint_dir`` (weights, optimiser, history, extra state)."""
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "cyclic", "step")
SGD_MOMENTUM = 0.9
CYCLIC_PEAK = 0.4
"""The cyclic schedule peaks at this fraction of training (Wong et al. 2020)."""
DATA_ORDER_STRIDE = 100_003
"""The data order of epoch ``e`` is drawn from the seed ``seed * DATA_ORDER_STRIDE + e``."""
POSITION_STRIDE = 1_000_003
SALT_STRIDE = 7_919
"""A defense's draws at fractional epoch ``t`` come from ``seed * POSITION_STRIDE + round(t * 1e6) + salt * SALT_STRIDE``."""
RANK_STRIDE = 1_000_003 * 104_729
"""In a run of several processes, rank ``r`` adds ``r * RANK_STRIDE`` to that seed (rank 0: the one-process draws)."""


# ---------------------------------------------------------------------------------------------- setting markers


@dataclass(frozen=True)
class Runtime:
    """Marks a constructor setting that says how a run is carried out (device, checkpoint folder, progress bar),
    not what is trained: validated like any setting, stored as an attribute, but not recorded in
    :meth:`Trainer.settings`, the checkpoint's configuration or the model card."""


@dataclass(frozen=True)
class Recorded:
    """How a setting is written in :meth:`Trainer.settings` when its value is not JSON-friendly (e.g. the names of
    static models instead of the models): ``Annotated[..., Recorded(fn)]`` records ``fn(value)``."""

    fn: Callable[[Any], Any]


def _folder(name: str, value: Any) -> Path:
    if not isinstance(value, (str, Path)):
        raise TypeError(f"{name}: expected a folder path (str or Path), got {type(value).__name__} {value!r}")
    return Path(value)


Optimizer = Annotated[str, OneOf(OPTIMIZERS)]
PrecisionSetting = Annotated[str, OneOf(PRECISIONS)]
Schedule = Annotated[str, OneOf(SCHEDULES)]
Device = Annotated[str | torch.device | None, Runtime()]
Folder = Annotated[str | Path | None, Check(_folder), Runtime()]


def is_recorded(setting: Setting) -> bool:
    """Whether ``setting`` is recorded in :meth:`Trainer.settings` (every setting but the :class:`Runtime` ones)."""
    return not any(isinstance(c, Runtime) for c in setting.constraints)


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a setting's value: tuples become lists, paths strings."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------- declared settings


_DECLARED: dict[type, dict[str, Setting]] = {}


def declared_settings(cls: type) -> dict[str, Setting]:
    """The settings of trainer class ``cls``: the keyword-only parameters of each ``__init__`` along the MRO.

    Base classes come first, so the order is the recording order. A subclass that declares a setting again changes
    its default (``schedule="cyclic"``); when it gives no constraint, the base's constraints still apply. Help texts
    come from the ``Args:`` sections of the class docstrings. Computed once per class.
    """
    if cls not in _DECLARED:
        _DECLARED[cls] = _declare(cls)
    return _DECLARED[cls]


def _declare(cls: type) -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    for klass in reversed(cls.__mro__):
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        docs = docstring_args(inspect.getdoc(klass) or "")
        for name, s in settings_of(inspect.unwrap(init)).items():
            base = out.get(name)
            if base is not None and not s.constraints:
                s = replace(s, type=base.type, optional=base.optional, constraints=base.constraints)
            out[name] = replace(s, doc=docs.get(name) or s.doc or (base.doc if base else ""))
    return out


def _configured(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a trainer's ``__init__``: the outermost call validates every setting once and stores it as an attribute
    of the same name before the ``__init__`` bodies run (they then only derive what is not a plain setting)."""

    @functools.wraps(init)
    def __init__(self: Trainer, *args: Any, **kwargs: Any) -> None:
        if self.__dict__.get("_configuring"):  # a super().__init__ inside the outermost call
            init(self, *args, **kwargs)
            return
        values, passthrough = self._checked_settings(init, kwargs)
        for name, value in values.items():
            setattr(self, name, value)
        self.__dict__["_configuring"] = True
        try:
            init(self, *args, **values, **passthrough)
        finally:
            del self.__dict__["_configuring"]

    return __init__


TrainerClass = TypeVar("TrainerClass", bound="type[Trainer]")

DEFENSES: Registry[type[Trainer]] = Registry("defense")
"""The trainer class of every registered defense, by the name ``advlab train --defense NAME`` uses."""


def register_defense(name: str) -> Callable[[TrainerClass], TrainerClass]:
    """Register a trainer class under ``name`` in :data:`DEFENSES` (and so in the CLI and the conformance suite).

    Examples:
        >>> @register_defense("my-defense")
        ... class MyDefense(Trainer): ...
    """

    def deco(cls: TrainerClass) -> TrainerClass:
        cls.name = name
        DEFENSES.register(name)(cls)
        return cls

    return deco


# ---------------------------------------------------------------------------------------------- accuracy


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Clean accuracy of ``model`` on ``(x, y)`` in eval mode (mode restored afterwards)."""
    return correct_count(model, x, y, batch_size) / max(1, x.shape[0])


def correct_count(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> int:
    """How many of ``(x, y)`` ``model`` classifies correctly in eval mode (mode restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return int((predict(model, x, batch_size=batch_size) == y.to(x.device)).sum())
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------- one fit


@dataclass
class TrainingData:
    """The data of one fit: labelled ``x``, ``y``, the unlabelled ``x_u`` (semi-supervised trainers) and ``val``."""

    x: torch.Tensor
    y: torch.Tensor
    x_u: torch.Tensor | None
    val: tuple[torch.Tensor, torch.Tensor] | None

    def batches(self, batch_size: int, unlabeled_batch_size: int) -> int:
        """Minibatches per epoch: one pass over the labelled set, or over the unlabelled set when there is one."""
        if self.x_u is None:
            return math.ceil(self.x.shape[0] / batch_size)
        return math.ceil(self.x_u.shape[0] / unlabeled_batch_size)

    def order(
        self, generator: torch.Generator, batches: int, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This epoch's order of the labelled examples (cycled to cover ``batches``) and of the unlabelled ones."""
        order = torch.randperm(self.x.shape[0], generator=generator)
        if self.x_u is None:
            return order, None
        u_order = torch.randperm(self.x_u.shape[0], generator=generator)
        cycles = math.ceil(batches * batch_size / self.x.shape[0])
        extra = [torch.randperm(self.x.shape[0], generator=generator) for _ in range(cycles - 1)]
        return torch.cat([order, *extra]), u_order


@dataclass
class _Run:
    """What one :meth:`Trainer.fit` works on, shared by its steps.

    ``step`` is what a minibatch calls: the trainer's ``training_step`` on ``model`` in one process, the same step
    inside ``DistributedDataParallel`` in several.
    """

    model: Classifier
    data: TrainingData
    device: torch.device
    optimizer: torch.optim.Optimizer
    checkpoint: Checkpoint
    batches: int
    unlabeled_batch_size: int
    precision: Precision
    replica: Replica
    step: Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Tally:
    """Running loss and accuracy of one epoch."""

    loss: float = 0.0
    correct: int = 0
    seen: int = 0


# ---------------------------------------------------------------------------------------------- the trainer


class Trainer:
    """Standard training loop with the hooks defenses need (scikit-learn style).

    Settings go in the constructor (each stored as an attribute of the same name), :meth:`fit` returns ``self``,
    learned state ends in ``_`` (``model_``, ``history_``).

    **Several processes.** Inside an initialised ``torch.distributed`` process group of more than one process
    (``torchrun --nproc-per-node N -m advlab train ...``, or any script run by ``torchrun`` that initialises the
    group), :meth:`fit` trains with ``DistributedDataParallel``. Every rank draws the same permutation of the data
    each epoch and takes its contiguous part of every global batch: ``batch_size`` stays the *global* batch size,
    so N processes take the same optimiser steps on the same batches as one (each rank's loss is weighted by its
    share, so the averaged gradient is the gradient of the global batch's mean loss). Each rank crafts the
    adversarial examples of its own part, with its own random stream (rank 0's draws are those of one process).
    The step's forward passes run inside DDP as one module (:class:`~advlab.defenses._runtime.TrainingStep`), so a
    defense needs no change. Batch norm normalises with each rank's part of the batch unless ``sync_bn`` (GPUs).
    The ranks must be started with the same settings and data (compared before any work). Rank 0 alone reads and
    writes the checkpoint (the others receive its state, so the folder need not be shared), logs and shows
    progress; ``history_`` holds the loss and accuracy over all ranks, and the validation accuracy is computed on
    rank 0's weights over all ranks' parts of ``val``. A killed run resumes with the same command, also with
    another number of processes. :meth:`extra_state` is rank 0's. One process is bit for bit what it was.

    Args:
        epochs: passes over the training data.
        batch_size: examples per step (the global batch over all processes).
        lr: peak learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9, Nesterov off).
        weight_decay: L2 penalty added by the optimiser.
        schedule: ``"constant"``, ``"cosine"``, ``"cyclic"`` (linear up to ``lr`` at 2/5 of training then down to
            0, as in Wong et al. 2020) or ``"step"`` (÷10 at 50% and 75%).
        seed: seeds a private generator for data order and any randomness of the defense.
        precision: ``"fp32"`` (default), or ``"bf16"`` / ``"fp16"``: the forward passes under ``torch.autocast``
            (crafting included; inputs, adversarial examples, weights and optimiser state stay float32), with
            dynamic loss scaling (``torch.amp.GradScaler``) for ``fp16``. bfloat16 autocast runs on CPUs too.
        sync_bn: in a run of several processes on GPUs, batch norm with the statistics of the global batch
            (``torch.nn.SyncBatchNorm``); without it each rank uses its own part's. No effect in one process.
        device: ``"cpu"``, ``"cuda"``... (default: where the model is; ``"cuda"`` in several processes: each
            rank's own GPU, ``cuda:LOCAL_RANK``).
        checkpoint_dir: folder for per-epoch checkpoints; a later ``fit`` with the same settings resumes there.
        progress: show a tqdm bar (only on a terminal).
        eval_batch_size: batch size for the per-epoch accuracy.
        overwrite: discard a checkpoint of another configuration in ``checkpoint_dir`` instead of refusing it.

    Examples:
        >>> trainer = StandardTraining(epochs=5, lr=1e-3).fit(model, train, val)
        >>> trainer.history_[-1]["val_accuracy"]
    """

    name = "standard"
    accepts_unlabeled: bool = False
    """Semi-supervised trainers set this; they receive an unlabelled batch as ``x_unlabeled`` in ``training_step``."""
    replays: int = 1
    """How many consecutive optimiser steps each minibatch gets (free adversarial training replays it ``m`` times)."""
    renamed: ClassVar[Mapping[str, str]] = {}
    """``{old name: new name}`` of settings renamed in this release (accepted with a ``FutureWarning``)."""
    find_unused_parameters: bool = False
    """Set by trainers whose steps leave some parameters without a gradient (DDP must then look for them)."""
    _rank_salt: int = 0
    """This process's rank in a run of several (mixed into :meth:`generator_at`), 0 in one process."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float
    schedule: str
    seed: int
    precision: str
    sync_bn: bool
    device: str | torch.device | None
    checkpoint_dir: Path | None
    progress: bool
    eval_batch_size: int
    overwrite: bool

    @_configured
    def __init__(
        self,
        *,
        epochs: PositiveInt = 5,
        batch_size: PositiveInt = 128,
        lr: PositiveFloat = 1e-3,
        optimizer: Optimizer = "adam",
        weight_decay: NonNegativeFloat = 0.0,
        schedule: Schedule = "constant",
        seed: NonNegativeInt = 0,
        precision: PrecisionSetting = "fp32",
        sync_bn: bool = False,
        device: Device = None,
        checkpoint_dir: Folder = None,
        progress: Annotated[bool, Runtime()] = True,
        eval_batch_size: Annotated[PositiveInt, Runtime()] = 1000,
        overwrite: Annotated[bool, Runtime()] = False,
    ) -> None:
        """The settings are validated and stored by the base class; see the class docstring."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = _configured(vars(cls)["__init__"])  # type: ignore[method-assign]

    # ------------------------------------------------------------------ settings
    @classmethod
    def declared_settings(cls) -> dict[str, Setting]:
        """Every setting of this trainer's constructor (recorded ones and :class:`Runtime` options), in order."""
        return dict(declared_settings(cls))

    def _checked_settings(
        self, init: Callable[..., None], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every declared setting's value (given or default), validated; and the non-setting keywords of ``init``."""
        cls = type(self)
        declared = declared_settings(cls)
        kwargs = rename_deprecated(cls.name, kwargs, cls.renamed)
        named = inspect.signature(init).parameters
        passthrough = {
            k: v
            for k, v in kwargs.items()
            if k not in declared and k in named and named[k].kind is not inspect.Parameter.VAR_KEYWORD
        }
        given = {k: v for k, v in kwargs.items() if k not in passthrough}
        defaults = {name: s.default for name, s in declared.items()}
        return validate_all(cls.name, declared, {**defaults, **given}), passthrough

    def settings(self) -> dict[str, Any]:
        """All hyper-parameters, JSON-friendly; recorded in the model card and the checkpoint's configuration.

        ``{"defense": name}``, then every constructor setting but the :class:`Runtime` options, by its attribute
        (so a default the constructor resolved, such as ``step_size=None``, is recorded as the value used), then
        :meth:`derived_settings`.
        """
        out: dict[str, Any] = {"defense": self.name}
        for name, s in declared_settings(type(self)).items():
            if is_recorded(s):
                record = next((c.fn for c in s.constraints if isinstance(c, Recorded)), _plain)
                out[name] = record(getattr(self, name))
        return {**out, **self.derived_settings()}

    def derived_settings(self) -> dict[str, Any]:
        """Values derived from the settings that the card should show too (free training's ``epochs_run``)."""
        return {}

    @property
    def epochs_run(self) -> int:
        """Passes over the training data (``epochs``; fewer for trainers that replay each minibatch)."""
        return self.epochs

    # ------------------------------------------------------------------ hooks for defenses
    def setup(self, model: Classifier, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Called once before training (after resume state is known); e.g. to build auxiliary models."""

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss to minimise on one batch and the logits used for the running training accuracy.

        ``epoch`` is fractional (``epoch_index + batch / batches``), for ramp-ups. Override in defenses.
        """
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    def after_backward(self, model: Classifier) -> None:
        """Called after ``loss.backward()`` and before the optimiser step (e.g. to read input gradients)."""

    def save_artifacts(self, folder: str | Path) -> None:
        """Write parts of the defense that are not the classifier's weights (a denoiser, a detector...)."""

    def end_epoch(self, model: Classifier, epoch: int, record: dict[str, Any]) -> bool:
        """Called after each epoch with its history record (may add fields); return ``True`` to stop early."""
        return False

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Extra tensors to checkpoint (e.g. a perturbation carried across batches); restored by ``load_extra_state``."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` saved."""

    def generator_at(self, epoch: float, device: torch.device | str, salt: int = 0) -> torch.Generator:
        """A generator seeded from the seed and the position in training, so a resumed run draws the same numbers."""
        position = self.seed * POSITION_STRIDE + round(epoch * 1_000_000) + salt * SALT_STRIDE
        seed = (position + self._rank_salt * RANK_STRIDE) % (2**63 - 1)
        return torch.Generator(device=device).manual_seed(seed)

    # ------------------------------------------------------------------ schedule
    def lr_at(self, epoch: float) -> float:
        """Learning rate at fractional ``epoch`` in ``[0, epochs_run)``."""
        t = epoch / self.epochs_run
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * t))
        if self.schedule == "cyclic":
            return self.lr * (t / CYCLIC_PEAK if t < CYCLIC_PEAK else max(0.0, (1 - t) / (1 - CYCLIC_PEAK)))
        return self.lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))  # step

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=SGD_MOMENTUM, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ fit
    def fit(self, model: nn.Module, train: Any, val: Any = None, *, unlabeled: Any = None) -> Trainer:
        """Train ``model`` in place on ``train``; evaluate on ``val`` after each epoch.

        Args:
            model: an ``advlab.Classifier`` (or a bare module, wrapped with bounds (0, 1)).
            train: a Dataset (``.x``, ``.y``) or a pair ``(x, y)`` of raw inputs and labels. Semi-supervised
                trainers (``accepts_unlabeled``) also accept the label ``-1`` for unlabelled examples.
            val: optional held-out data in the same forms.
            unlabeled: inputs without labels (a tensor ``x_u``), for semi-supervised trainers only. An epoch is
                then one pass over the unlabelled set, the labelled set cycling alongside.

        Returns:
            self, with ``model_`` and ``history_`` (one dict per epoch: losses, accuracies, lr, seconds).

        Raises:
            ValueError: bad data, unlabelled data for a supervised trainer, or a checkpoint of another
                configuration in ``checkpoint_dir`` (unless ``overwrite``); in several processes, ranks with
                different settings or data.
            advlab.distributed.DistributedError: in several processes, another rank died or stopped answering.
        """
        model = as_classifier(model)
        data = self._training_data(model, train, val, unlabeled)
        run = self._start(model, data)
        start = self._resume(run)
        with self._replicated(run):
            for epoch in range(start, self.epochs_run):
                with distributed.guard(f"training epoch {epoch + 1}"):
                    record = self._train_epoch(run, epoch)
                    stop = self._finish_epoch(run, epoch, record)
                if stop:
                    log.warning("stopping early after epoch %d", epoch + 1)
                    break
        model.eval()
        return self

    def _training_data(self, model: Classifier, train: Any, val: Any, unlabeled: Any) -> TrainingData:
        """``train``, ``val`` and ``unlabeled`` as tensors, checked; labels ``-1`` moved to the unlabelled set."""
        x, y = validation.as_xy(train, "train", labels="optional")
        if y is None:
            raise ValueError("train: this trainer is supervised and needs labels; pass (x, y) or a Dataset")
        x_u = self._unlabeled(model, unlabeled)
        if y.dim() == 1 and y.numel() and bool((y == -1).any()):
            x, y, x_u = self._split_marked(x, y, x_u)
        validation.check_input(x, model.bounds, name="train.x")
        validation.check_labels(y, x.shape[0], model.num_classes, name="train.y")
        xv, yv = (None, None) if val is None else validation.as_xy(val, "val", labels="optional")
        return TrainingData(x, y, x_u, None if xv is None or yv is None else (xv, yv))

    def _unlabeled(self, model: Classifier, unlabeled: Any) -> torch.Tensor | None:
        if unlabeled is None:
            return None
        if not self.accepts_unlabeled:
            raise ValueError(
                f"unlabeled: the {self.name!r} trainer is supervised and cannot use unlabelled data; "
                "use a semi-supervised defense (e.g. 'vat') or drop the unlabelled set"
            )
        x_u, _ = validation.as_xy(unlabeled, "unlabeled", labels="optional")
        validation.check_input(x_u, model.bounds, name="unlabeled")
        return x_u

    def _split_marked(
        self, x: torch.Tensor, y: torch.Tensor, x_u: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Examples labelled ``-1`` join the unlabelled set (semi-supervised trainers only)."""
        if not self.accepts_unlabeled:
            raise ValueError(
                f"train.y: {int((y == -1).sum())} label(s) are -1 (unlabelled), but the {self.name!r} trainer is "
                "supervised; drop those examples or use a semi-supervised defense (e.g. 'vat')"
            )
        keep = y != -1
        x_u = x[~keep] if x_u is None else torch.cat([x_u, x[~keep]])
        x, y = x[keep], y[keep]
        if x.shape[0] == 0:
            raise ValueError("train.y: every label is -1; at least one labelled example is needed")
        return x, y, x_u

    def _start(self, model: Classifier, data: TrainingData) -> _Run:
        """Move the model to the device; set up the optimiser, the checkpoint and the learned state.

        In several processes, the ranks first compare their settings and data (refused if they differ).
        """
        world = distributed.world()
        device = torch.device(self.device) if self.device is not None else model.device
        if world.distributed:
            device = self._rank_device(device, world)
        model.to(device)
        self.model_ = model
        self.history_: list[dict[str, Any]] = []
        self.unlabeled_ = data.x_u
        self._rank_salt = world.rank if world.distributed else 0
        optimizer = self._make_optimizer(model)
        u_batch = getattr(self, "unlabeled_batch_size", self.batch_size)
        run = _Run(
            model,
            data,
            device,
            optimizer,
            self._checkpoint(model, data),
            data.batches(self.batch_size, u_batch),
            u_batch,
            Precision(self.precision, device),
            Replica(world),
            functools.partial(self.training_step, model),
        )
        if world.distributed:
            same = {**run.checkpoint.config, "data": data_fingerprint(data.x, data.y)}
            distributed.check_same(same, what="training settings and data")
        return run

    def _rank_device(self, device: torch.device, world: distributed.World) -> torch.device:
        """This rank's device: its own GPU for ``"cuda"``; refused where the process group's backend cannot go."""
        if world.backend == "nccl" and device.type != "cuda":
            raise ValueError(
                f"device: the process group uses NCCL, which needs CUDA tensors, but this trainer runs on {device}; "
                "train on cuda (each rank on its own GPU) or initialise the group with the gloo backend"
            )
        return distributed.device_for(device)

    @contextlib.contextmanager
    def _replicated(self, run: _Run) -> Iterator[None]:
        """Within it, in several processes, ``run.step`` is the training step inside ``DistributedDataParallel``
        (batch norm synchronised when ``sync_bn``); in one process nothing changes."""
        if not run.replica.world.distributed:
            yield
            return
        with contextlib.ExitStack() as stack:
            if self.sync_bn:
                stack.enter_context(synchronised_batch_norm(run.model.module, run.device))
            step = TrainingStep(self.training_step, run.model)
            run.step = run.replica.wrap(
                step,
                run.device,
                find_unused_parameters=self.find_unused_parameters,
                constants=(run.model.mean, run.model.std),
            )
            try:
                yield
            finally:
                run.step = functools.partial(self.training_step, run.model)

    def _checkpoint(self, model: Classifier, data: TrainingData) -> Checkpoint:
        """The run's checkpoint, keyed by the settings and fingerprints of the data and the model."""
        config: dict[str, Any] = {
            **self.settings(),
            "n_train": data.x.shape[0],
            "model": type(model.module).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if data.x_u is not None and data.x_u.shape[0]:
            config["n_unlabeled"] = data.x_u.shape[0]
        return Checkpoint(self.checkpoint_dir, config, file=CHECKPOINT_FILE, overwrite=self.overwrite)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self, run: _Run) -> int:
        """Load the checkpoint if there is one, then :meth:`setup`; return the number of epochs already done.

        In several processes rank 0 reads the checkpoint and sends it to the others (an error reading it stops all).
        """
        saved = distributed.on_main(run.checkpoint.load, what="reading the checkpoint")
        start = 0
        if saved is not None:
            tensors = {k: v.to(run.model.device) for k, v in saved.tensors.items()}
            run.model.module.load_state_dict(_strip("model.", tensors))
            run.optimizer.load_state_dict(_optimizer_state(tensors, saved.state))
            run.precision.load_state(saved.state.get("grad_scaler", {}))
            self.load_extra_state(_strip("extra.", tensors))
            self.history_ = list(saved.state["history"])
            start = int(saved.state["epoch"]) + 1
            if run.replica.world.is_main:
                log.info("resuming from %s after epoch %d", self.checkpoint_dir, start)
        self.setup(run.model, run.data.x, run.data.y)
        return start

    def _save(self, run: _Run, epoch: int) -> None:
        """Checkpoint the model, optimiser, history and extra state after ``epoch`` (a no-op without a folder).

        Rank 0 alone writes (atomically); the other ranks hold the same weights and optimiser state.
        """
        if self.checkpoint_dir is None or not run.replica.world.is_main:
            return
        tensors = {f"model.{k}": v for k, v in run.model.module.state_dict().items()}
        opt_state = run.optimizer.state_dict()
        scalars: dict[str, Any] = {}
        for pid, state in opt_state["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt.{pid}.{key}"] = value
                else:
                    scalars[f"{pid}.{key}"] = value
        tensors.update({f"extra.{k}": v for k, v in self.extra_state().items()})
        state = {
            "epoch": epoch,
            "history": self.history_,
            "optimizer_scalars": scalars,
            "param_groups": opt_state["param_groups"],
        }
        if run.precision.scaler is not None:
            state["grad_scaler"] = run.precision.state()
        run.checkpoint.save(tensors, state)

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, run: _Run, epoch: int) -> dict[str, Any]:
        """One pass: the minibatches in this epoch's seeded order; returns the epoch's history record.

        In several processes each rank trains on its part of every minibatch; the record's loss and accuracy are
        over all ranks.
        """
        gen = torch.Generator().manual_seed(self.seed * DATA_ORDER_STRIDE + epoch)
        order, u_order = run.data.order(gen, run.batches, self.batch_size)
        run.model.train()
        t0 = time.perf_counter()
        tally = _Tally()
        bar = self._bar(run.batches, f"epoch {epoch + 1}/{self.epochs_run}")
        for b in range(run.batches):
            idx, weight = run.replica.shard(order[b * self.batch_size : (b + 1) * self.batch_size])
            xb, yb = (
                run.data.x[idx].to(run.device, non_blocking=True),
                run.data.y[idx].to(run.device, non_blocking=True),
            )
            kwargs = {}
            if u_order is not None and run.data.x_u is not None:
                u_idx = run.replica.part(u_order[b * run.unlabeled_batch_size : (b + 1) * run.unlabeled_batch_size])
                kwargs["x_unlabeled"] = run.data.x_u[u_idx].to(run.device, non_blocking=True)
            self._train_batch(run, xb, yb, epoch + b / run.batches, kwargs, tally, weight)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{tally.loss / tally.seen:.4f}", acc=f"{tally.correct / tally.seen:.3f}")
        if bar is not None:
            bar.close()
        loss, correct, seen = run.replica.totals([tally.loss, tally.correct, tally.seen], "summing the epoch's loss")
        return {
            "epoch": epoch + 1,
            "train_loss": loss / seen,
            "train_accuracy": correct / seen,
            "lr": self.lr_at(epoch),
            "seconds": time.perf_counter() - t0,
        }

    def _train_batch(
        self,
        run: _Run,
        xb: torch.Tensor,
        yb: torch.Tensor,
        frac: float,
        kwargs: dict[str, Any],
        tally: _Tally,
        weight: float = 1.0,
    ) -> None:
        """The optimiser step(s) on one minibatch at fractional epoch ``frac`` (``replays`` of them).

        ``weight`` scales the loss for the backward pass (this rank's share of a global batch; 0 for a rank
        without examples, whose step then does not count in the tally).
        """
        for group in run.optimizer.param_groups:
            group["lr"] = self.lr_at(frac)
        for _ in range(self.replays):
            with run.precision.autocast():
                loss, logits = run.step(xb, yb, frac, **kwargs)
            run.optimizer.zero_grad(set_to_none=True)
            run.precision.backward(loss if weight == 1.0 else loss * weight)
            self.after_backward(run.model)
            run.precision.step(run.optimizer)
            if weight > 0:
                tally.loss += float(loss.detach()) * xb.shape[0]
                tally.correct += int((logits.detach().argmax(1) == yb).sum())
                tally.seen += xb.shape[0]

    def _finish_epoch(self, run: _Run, epoch: int, record: dict[str, Any]) -> bool:
        """Validate, call :meth:`end_epoch`, record, log and checkpoint; return whether to stop early."""
        run.replica.sync_buffers(run.model)
        if run.data.val is not None:
            record["val_accuracy"] = self._val_accuracy(run, *run.data.val)
        stop = run.replica.any(self.end_epoch(run.model, epoch, record), "agreeing on an early stop")
        self.history_.append(record)
        if run.replica.world.is_main:
            log.info(
                "epoch %d/%d  loss %.4f  train acc %.4f%s  (%.1fs)",
                epoch + 1,
                self.epochs_run,
                record["train_loss"],
                record["train_accuracy"],
                f"  test acc {record['val_accuracy']:.4f}" if "val_accuracy" in record else "",
                record["seconds"],
            )
        self._save(run, epoch)
        return stop

    def _val_accuracy(self, run: _Run, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy on ``(x, y)``; in several processes each rank counts its part and the counts are summed."""
        if not run.replica.world.distributed:
            return accuracy(run.model, x, y, self.eval_batch_size)
        part = torch.arange(x.shape[0]).tensor_split(run.replica.world.size)[run.replica.world.rank]
        correct = correct_count(run.model, x[part], y[part], self.eval_batch_size)
        total_correct, total = run.replica.totals([correct, part.numel()], "summing the validation accuracy")
        return total_correct / max(1.0, total)

    def _bar(self, total: int, desc: str) -> Any:
        if not self.progress or not sys.stderr.isatty() or not distributed.is_main():
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _strip(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_state(tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> dict[str, Any]:
    """The optimiser's ``state_dict`` from the checkpoint's ``opt.<param>.<key>`` tensors and its scalars."""
    per_param: dict[int, dict[str, Any]] = {}
    for k, v in _strip("opt.", tensors).items():
        pid, key = k.split(".", 1)
        per_param.setdefault(int(pid), {})[key] = v
    for k, v in state.get("optimizer_scalars", {}).items():
        pid, key = k.split(".", 1)
        per_param.setdefault(int(pid), {})[key] = v
    return {"state": per_param, "param_groups": state["param_groups"]}
