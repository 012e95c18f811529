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
