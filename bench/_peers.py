"""What a user hands a peer library: the network with its input normalisation, as one plain ``nn.Module``.

advlab's :class:`~advlab.Classifier` runs gradient-free CPU forwards in cache-sized chunks
(``advlab.models.CPU_FORWARD_CHUNK``). Giving the Classifier itself to torchattacks or ART would let them
profit from advlab's wrapper, so the comparisons give them this module instead: the same function, evaluated
the way the peer's own code batches it.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.models import Classifier


class PeerModel(nn.Module):
    """``clf.module(clf.normalize(x))`` in one call, whatever the batch size."""

    def __init__(self, clf: Classifier) -> None:
        super().__init__()
        self.clf = clf
        self.train(clf.training)  # a new module starts in train mode; peers restore the mode they were given

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.module(self.clf.normalize(x))


class PassCounter(nn.Module):
    """``module`` with a count of the examples it runs forward and back: the cost unit of A3 and AutoAttack's logs.

    ``forward`` adds the batch size of every call; ``backward`` adds it again when a gradient flows back through
    the call's output (a hook on the output, so forwards without gradients, or whose graph is never
    differentiated, add nothing). Every library of a comparison gets its model through the same counter, so their
    counts compare on equal terms; it is independent of advlab's own counter (``report.json``'s passes).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.forward_passes = 0
        self.backward_passes = 0
        self.train(module.training)

    def reset(self) -> tuple[int, int]:
        """The counts so far, then zero."""
        counts = (self.forward_passes, self.backward_passes)
        self.forward_passes = self.backward_passes = 0
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        n = x.shape[0]
        self.forward_passes += n
        if out.requires_grad:
            out.register_hook(lambda grad: self._backward(n))
        return out

    def _backward(self, n: int) -> None:
        self.backward_passes += n
