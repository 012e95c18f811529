"""Dropout as a defense (training with dropout, optionally dropout at test time): known to fail."""

from __future__ import annotations

import copy
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab import validation
from advlab.defenses.base import Trainer, register_defense
from advlab.models import Classifier, as_classifier
from advlab.settings import Range

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

Probability = Annotated[float, Range(0, 1, strict_max=True)]
"""A drop probability in ``[0, 1)``."""


def _drop(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout with drop probability ``p`` (mask from ``generator``, or the default RNG when None)."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= p
    return x * keep / (1 - p)


def install_dropout(module: nn.Module, p: float, input_p: float, generator_fn, *, always: bool = False) -> list:
    """Forward pre-hooks that apply dropout to the input of every Linear/Conv layer of ``module``.

    The first layer drops with ``input_p``, later ones with ``p``. Active in train mode only, unless ``always``
    (test-time dropout). Returns the hook handles (``handle.remove()`` uninstalls them). The state dict is
    unchanged, so the model saves and loads as its architecture.
    """
    handles = []
    layers = [m for m in module.modules() if isinstance(m, _LAYERS)]
    for i, layer in enumerate(layers):
        rate = input_p if i == 0 else p

        def hook(mod, args, rate=rate):
            if not (mod.training or always) or rate <= 0:
                return None
            return (_drop(args[0], rate, generator_fn()), *args[1:])

        handles.append(layer.register_forward_pre_hook(hook))
    return handles


def dropout_classifier(model: Classifier, p: float = 0.5, input_p: float = 0.2) -> Classifier:
    """A copy of ``model`` that keeps dropout on at test time (a random model; masks from torch's default RNG).

    Examples:
        >>> random_clf = dropout_classifier(clf, p=0.5)
    """
    p = validation.check_float("p", p, minimum=0.0, maximum=1.0, strict_max=True)
    input_p = validation.check_float("input_p", input_p, minimum=0.0, maximum=1.0, strict_max=True)
    clone = copy.deepcopy(model)
    install_dropout(clone.module, p, input_p, lambda: None, always=True)
    clone.eval()
    return clone


@register_defense("dropout")
class DropoutTraining(Trainer):
    """Cross-entropy training with (inverted) dropout on the input of every Linear/Conv layer.

    Dropout is added with forward pre-hooks during ``fit`` and removed afterwards, so any architecture can be
    trained with it and saved as itself. With ``test_time=True`` the deployed model ``defended_model_`` keeps
    dropout on at test time (:func:`dropout_classifier`).

    **Known to fail.** Dropout is a regulariser, not a defense: the trained network (dropout off) falls to
    plain white-box PGD. Test-time dropout makes the model random, which only adds noise to the gradients:
    EOT (averaging logits over dropout masks, Athalye et al. 2018, arXiv:1802.00420) breaks it; the
    evaluation engine detects the randomness and applies EOT automatically.

    Args:
        p: drop probability of hidden layers' inputs (Srivastava et al.: 0.5).
        input_p: drop probability of the first layer's input (0.2).
        test_time: keep dropout on in the deployed model.
        **settings: see :class:`~advlab.defenses.base.Trainer`.

    Raises:
        ValueError: a probability outside ``[0, 1)``.

    References:
        Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting", JMLR 2014;
        Gal & Ghahramani, "Dropout as a Bayesian Approximation", arXiv:1506.02142 (test-time dropout).

    Examples:
        >>> DropoutTraining(p=0.5, test_time=True).fit(model, train).defended_model_
    """

    p: float
    input_p: float
    test_time: bool

    def __init__(
        self, *, p: Probability = 0.5, input_p: Probability = 0.2, test_time: bool = False, **settings: Any
    ) -> None:
        super().__init__(**settings)
        self._gen: torch.Generator | None = None

    def fit(self, model: torch.nn.Module, train: Any, val: Any = None, **kwargs: Any) -> DropoutTraining:
        model = as_classifier(model)
        handles = install_dropout(model.module, self.p, self.input_p, lambda: self._gen)
        try:
            super().fit(model, train, val, **kwargs)
        finally:
            for h in handles:
                h.remove()
        self.defended_model_ = dropout_classifier(self.model_, self.p, self.input_p) if self.test_time else self.model_
        return self

    def training_step(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, epoch: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._gen = self.generator_at(epoch, x.device)  # masks seeded by position: resumable
        logits = model(x)
        return F.cross_entropy(logits, y), logits
