"""Standard (non-adversarial) training: cross-entropy on clean data, the baseline every defense is compared to."""

from __future__ import annotations

from advlab.defenses.base import Trainer, register_defense


@register_defense("standard")
class StandardTraining(Trainer):
    """Empirical risk minimisation with cross-entropy; all settings are :class:`~advlab.defenses.base.Trainer`'s.

    Examples:
        >>> StandardTraining(epochs=5).fit(model, train_data, test_data).history_[-1]
    """
