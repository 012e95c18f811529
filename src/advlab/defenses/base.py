"""The trainer base class: epochs, optimiser, learning-rate schedule, progress, per-epoch checkpoint and resume.

Defenses subclass :class:`Trainer` and override :meth:`Trainer.training_step` (and :meth:`Trainer.settings`
for their own hyper-parameters). Everything else — batching, schedules, evaluation, checkpoints written
atomically after every epoch, resuming after a kill with no lost epochs, refusing a checkpoint of a different
configuration — lives here once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab import io, validation
from advlab.models import Classifier, as_classifier

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "cyclic", "step")


def as_tensors(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept a Dataset-like object with ``.x``/``.y``, a pair ``(x, y)``, or ``x`` alone (unlabelled)."""
    if data is None:
        raise ValueError(f"{name}: expected training data, got None")
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        return torch.as_tensor(x), None if y is None else torch.as_tensor(y).long()
    if isinstance(data, torch.Tensor):
        return data, None
    raise TypeError(
        f"{name}: expected a Dataset (with .x and .y), a pair (x, y) or a tensor x, got {type(data).__name__}"
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Clean accuracy of ``model`` on ``(x, y)`` in eval mode (mode restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / max(1, x.shape[0])


def _config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Trainer:
    """Standard training loop with the hooks defenses need (scikit-learn style).

    Settings go in the constructor, :meth:`fit` returns ``self``, learned state ends in ``_``
    (``model_``, ``history_``).

    Args:
        epochs: passes over the training data.
        batch_size: examples per step.
        lr: peak learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9, Nesterov off).
        weight_decay: L2 penalty added by the optimiser.
        schedule: ``"constant"``, ``"cosine"``, ``"cyclic"`` (linear up to ``lr`` at 2/5 of training then down to
            0, as in Wong et al. 2020) or ``"step"`` (÷10 at 50% and 75%).
        seed: seeds a private generator for data order and any randomness of the defense.
        device: ``"cpu"``, ``"cuda"``... (default: where the model is).
        checkpoint_dir: folder for per-epoch checkpoints; a later ``fit`` with the same settings resumes there.
        progress: show a tqdm bar (only on a terminal).
        eval_batch_size: batch size for the per-epoch accuracy.

    Example:
        >>> trainer = StandardTraining(epochs=5, lr=1e-3).fit(model, train, val)
        >>> trainer.history_[-1]["val_accuracy"]
    """

    name = "standard"
    accepts_unlabeled: bool = False
    """Semi-supervised trainers set this; they receive an unlabelled batch as ``x_unlabeled`` in ``training_step``."""
    replays: int = 1
    """How many consecutive optimiser steps each minibatch gets (free adversarial training replays it ``m`` times)."""

    def __init__(
        self,
        *,
        epochs: int = 5,
        batch_size: int = 128,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        schedule: str = "constant",
        seed: int = 0,
        device: str | torch.device | None = None,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        eval_batch_size: int = 1000,
    ) -> None:
        self.epochs = validation.check_int("epochs", epochs, minimum=1)
        self.batch_size = validation.check_int("batch_size", batch_size, minimum=1)
        self.lr = validation.check_float("lr", lr, minimum=0.0, strict_min=True)
        validation.check_choice("optimizer", optimizer, OPTIMIZERS)
        self.optimizer = optimizer
        self.weight_decay = validation.check_float("weight_decay", weight_decay, minimum=0.0)
        validation.check_choice("schedule", schedule, SCHEDULES)
        self.schedule = schedule
        self.seed = validation.check_int("seed", seed, minimum=0)
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress = progress
        self.eval_batch_size = validation.check_int("eval_batch_size", eval_batch_size, minimum=1)

    # ------------------------------------------------------------------ hooks for defenses
    def settings(self) -> dict[str, Any]:
        """All hyper-parameters, JSON-friendly; recorded in the model card and the checkpoint's config hash."""
        return {
            "defense": self.name,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "seed": self.seed,
        }

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

    # ------------------------------------------------------------------ schedule
    def lr_at(self, epoch: float) -> float:
        """Learning rate at fractional ``epoch`` in ``[0, epochs)``."""
        t = epoch / self.epochs
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * t))
        if self.schedule == "cyclic":
            peak = 0.4
            return self.lr * (t / peak if t < peak else max(0.0, (1 - t) / (1 - peak)))
        return self.lr * (0.1 ** (int(t >= 0.5) + int(t >= 0.75)))  # step

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ checkpoints
    def _config(self, model: Classifier, n_train: int, n_unlabeled: int = 0) -> dict[str, Any]:
        config = {
            "settings": self.settings(),
            "n_train": n_train,
            "model": type(model.module).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        if n_unlabeled:
            config["n_unlabeled"] = n_unlabeled
        return config

    def _save_checkpoint(
        self, model: Classifier, opt: torch.optim.Optimizer, epoch: int, config: dict[str, Any]
    ) -> None:
        assert self.checkpoint_dir is not None
        tensors = {f"model.{k}": v for k, v in model.module.state_dict().items()}
        opt_state = opt.state_dict()
        scalars: dict[str, Any] = {}
        for pid, state in opt_state["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt.{pid}.{key}"] = value
                else:
                    scalars[f"{pid}.{key}"] = value
        for key, value in self.extra_state().items():
            tensors[f"extra.{key}"] = value
        io.save_safetensors(self.checkpoint_dir / CHECKPOINT_FILE, tensors)
        meta = {
            "epoch": epoch,
            "config": config,
            "config_hash": _config_hash(config),
            "history": self.history_,
            "optimizer_scalars": scalars,
            "param_groups": opt_state["param_groups"],
        }
        io.write_json(self.checkpoint_dir / CHECKPOINT_META, meta)  # written last: it marks the epoch done

    def _try_resume(self, model: Classifier, opt: torch.optim.Optimizer, config: dict[str, Any]) -> int:
        """Load the checkpoint if there is one; return the number of epochs already done."""
        if self.checkpoint_dir is None or not (self.checkpoint_dir / CHECKPOINT_META).exists():
            return 0
        meta = io.read_json(self.checkpoint_dir / CHECKPOINT_META)
        if meta.get("config_hash") != _config_hash(config):
            raise ValueError(
                f"checkpoint_dir: {self.checkpoint_dir} holds a checkpoint of a different configuration "
                f"({json.dumps(meta.get('config', {}).get('settings'), sort_keys=True)}); "
                f"this run is {json.dumps(config['settings'], sort_keys=True)}. "
                "Use another folder, or delete the checkpoint to start over."
            )
        from safetensors.torch import load_file

        tensors = load_file(str(self.checkpoint_dir / CHECKPOINT_FILE), device=str(model.device))
        model.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v
        for k, v in meta.get("optimizer_scalars", {}).items():
            pid, key = k.split(".", 1)
            state.setdefault(int(pid), {})[key] = v
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.load_extra_state({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
        self.history_ = list(meta["history"])
        log.info("resuming from %s after epoch %d", self.checkpoint_dir, meta["epoch"] + 1)
        return int(meta["epoch"]) + 1

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
            ValueError: bad data, unlabelled data for a supervised trainer, or a checkpoint of a different
                configuration in ``checkpoint_dir``.
        """
        model = as_classifier(model)
        x, y = as_tensors(train, "train")
        if y is None:
            raise ValueError("train: this trainer is supervised and needs labels; pass (x, y) or a Dataset")
        x_u: torch.Tensor | None = None
        if unlabeled is not None:
            if not self.accepts_unlabeled:
                raise ValueError(
                    f"unlabeled: the {self.name!r} trainer is supervised and cannot use unlabelled data; "
                    "use a semi-supervised defense (e.g. 'vat') or drop the unlabelled set"
                )
            x_u, _ = as_tensors(unlabeled, "unlabeled")
            validation.check_input(x_u, model.bounds, name="unlabeled")
        if y.dim() == 1 and y.numel() and bool((y == -1).any()):
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
        validation.check_input(x, model.bounds, name="train.x")
        validation.check_labels(y, x.shape[0], model.num_classes, name="train.y")
        xv, yv = (None, None) if val is None else as_tensors(val, "val")
        device = torch.device(self.device) if self.device is not None else model.device
        model.to(device)
        self.model_ = model
        self.history_: list[dict[str, Any]] = []
        opt = self._make_optimizer(model)
        config = self._config(model, x.shape[0], 0 if x_u is None else x_u.shape[0])
        self.unlabeled_ = x_u
        start = self._try_resume(model, opt, config)
        self.setup(model, x, y)
        u_batch = getattr(self, "unlabeled_batch_size", self.batch_size)
        batches = math.ceil(
            (x.shape[0] if x_u is None else x_u.shape[0]) / (self.batch_size if x_u is None else u_batch)
        )
        for epoch in range(start, self.epochs):
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(x.shape[0], generator=gen)
            u_order = None
            if x_u is not None:  # one pass over the unlabelled set; the labelled set cycles
                u_order = torch.randperm(x_u.shape[0], generator=gen)
                cycles = math.ceil(batches * self.batch_size / x.shape[0])
                order = torch.cat([order] + [torch.randperm(x.shape[0], generator=gen) for _ in range(cycles - 1)])
            model.train()
            t0 = time.perf_counter()
            total_loss, correct, seen = 0.0, 0, 0
            bar = self._bar(batches, f"epoch {epoch + 1}/{self.epochs}")
            for b in range(batches):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
                kwargs = {}
                if u_order is not None and x_u is not None:
                    kwargs["x_unlabeled"] = x_u[u_order[b * u_batch : (b + 1) * u_batch]].to(device, non_blocking=True)
                frac = epoch + b / batches
                for group in opt.param_groups:
                    group["lr"] = self.lr_at(frac)
                for _ in range(self.replays):
                    loss, logits = self.training_step(model, xb, yb, frac, **kwargs)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.after_backward(model)
                    opt.step()
                    total_loss += float(loss.detach()) * xb.shape[0]
                    correct += int((logits.detach().argmax(1) == yb).sum())
                    seen += xb.shape[0]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
            if bar is not None:
                bar.close()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": total_loss / seen,
                "train_accuracy": correct / seen,
                "lr": self.lr_at(epoch),
                "seconds": time.perf_counter() - t0,
            }
            if xv is not None and yv is not None:
                record["val_accuracy"] = accuracy(model, xv, yv, self.eval_batch_size)
            stop = self.end_epoch(model, epoch, record)
            self.history_.append(record)
            log.info(
                "epoch %d/%d  loss %.4f  train acc %.4f%s  (%.1fs)",
                epoch + 1,
                self.epochs,
                record["train_loss"],
                record["train_accuracy"],
                f"  test acc {record['val_accuracy']:.4f}" if "val_accuracy" in record else "",
                record["seconds"],
            )
            if self.checkpoint_dir is not None:
                self._save_checkpoint(model, opt, epoch, config)
            if stop:
                log.warning("stopping early after epoch %d", epoch + 1)
                break
        model.eval()
        return self

    def _bar(self, total: int, desc: str):
        if not self.progress or not sys.stderr.isatty():
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
