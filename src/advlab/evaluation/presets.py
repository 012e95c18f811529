"""The attack cascades of :func:`advlab.evaluate`: presets (fast, standard, strong) and name resolution.

``standard`` is AutoAttack's evaluation (Croce & Hein 2020, arXiv:2003.01690) at about a tenth of its passes. AutoAttack
runs APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5000 queries) on every example still robust: about
9,700 forward and backward passes per robust example. ``standard`` runs APGD-CE (100 iterations) on every example,
then spends the costly attacks only where they pay (:class:`Closest`): APGD-T on the 20% of the examples still
robust that are closest to breaking (the highest margin ``max_{j != y} z_j - z_y`` any point reached), and on the
next 20% of the rest as long as the last share gave at least 10% breaks, against their 3 most likely other classes (the minimum-margin attack of Gao et al. 2022 uses the same few targets), then
APGD-T again, from a second random start, on the closest 5% (one random start misses an example now and then that
another breaks), and one run of Square with AutoAttack's 5000 queries on the closest 15% (of which the half with the
highest loss after 1000 queries goes on, unless those 1000 queries broke nothing). FAB-T is left out: in AutoAttack's published
logs it changes robust accuracy by at most 0.02 points. Why it works: the examples that APGD-T and Square break
after APGD-CE are among those APGD-CE brought closest (BENCHMARKS.md, "An evaluation at a tenth of AutoAttack's
passes"), except on models with few robust examples, where APGD-T's breaks spread further and its shares follow.

``strong`` runs everything in full, on every example: APGD-CE, APGD-T (9 targets), FMN (Pintor et al. 2021,
arXiv:2102.12827, a white-box minimum-norm attack in place of FAB-T), Square and the Carlini-Wagner attack of the
norm, each with restarts (:data:`STRONG_RESTARTS`). Use it for the last point of a published figure.

``fast`` is PGD-40 with a random start: a first look, and often an optimistic one. On the MNIST models of
BENCHMARKS.md (linf 0.3, 1000 images) it leaves 92.9% (PGD-trained) and 87.1% (fast-FGSM-trained) where APGD-CE
with 40 iterations, in about the same time, leaves 91.1% and 83.9%. The masking checks flag such gaps (Square
breaking what PGD left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advlab import validation
from advlab.attacks.registry import ALIASES, AttackConfig, is_attack, make_attack, resolve


@dataclass(frozen=True)
class Closest:
    """An attack of the cascade that runs only on the examples the stages before it brought closest to breaking.

    Of the ``m`` examples still robust when the stage begins, the ``ceil(fraction * m)`` with the highest margin
    ``max_{j != y} z_j - z_y`` over every point tried so far at that eps (the clean input and each earlier stage's
    candidate) are attacked; the others are left as they are (ties go to the smaller example id, so the choice does
    not depend on the order or the sharing out of the examples). On a labels-only oracle, which reveals no margin,
    the stage runs on every example. In a list of attack names, ``"square@0.1"`` means ``Closest("square", 0.1)``.

    With ``extend``, the stage goes on share by share: as long as the last share's success rate is at least
    ``extend``, the same ``fraction`` of the examples not yet attacked, the closest first, is attacked next. Where
    the examples that break are spread beyond the first share (a model with few robust examples), the stage follows
    them; where they are not, it stops after one share.

    Args:
        attack: an attack name (or alias) or an :class:`~advlab.attacks.AttackConfig`.
        fraction: the share of the still-robust examples attacked, in ``(0, 1]``.
        extend: attack the next share while the last one's success rate is at least this, in ``[0, 1]``; ``None``
            (the default): one share only.

    Examples:
        >>> evaluate(model, data, 0.3, attacks=["apgd-ce", Closest("apgd-t", 0.2, extend=0.1), "square@0.1"])
    """

    attack: str | AttackConfig
    fraction: float
    extend: float | None = None

    def __post_init__(self) -> None:
        validation.check_float("fraction", self.fraction, minimum=0.0, maximum=1.0, strict_min=True)
        if self.extend is not None:
            validation.check_float("extend", self.extend, minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class CascadeEntry:
    """One attack of the cascade: its label in reports, its config, and the share of examples it attacks.

    ``closest`` is ``None`` for an attack on every example still robust, else the fraction of them closest to
    breaking (see :class:`Closest`).
    """

    label: str
    config: AttackConfig
    closest: float | None = None
    extend: float | None = None

    def describe(self) -> dict[str, Any]:
        cls = type(self.config)
        return {
            "label": self.label,
            "name": cls.name,
            "settings": self.config.settings(),
            "closest": self.closest,
            "extend": self.extend,
            "minimum_norm": bool(cls.minimum_norm),
            "needs_gradients": bool(cls.needs_gradients),
            "query_based": bool(cls.query_based),
        }


PRESETS: dict[str, tuple[str | Closest, ...]] = {
    "fast": ("pgd",),
    # the second "apgd-t" (labelled "apgd-t#2") draws from streams of its own: a second random start
    "standard": ("apgd-ce", Closest("apgd-t", 0.2, extend=0.1), "apgd-t@0.05", "square@0.15"),
    "strong": ("apgd-ce", "apgd-t", "fmn", "square", "cw"),
}
"""Attack names of each preset, in cascade order (``cw`` means ``cw-l2`` for l2 and ``cw-linf`` for linf)."""

STRONG_RESTARTS = 5
"""Restarts given to every attack of the ``strong`` preset that has a ``restarts`` setting."""

PRESET_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "standard": {"apgd-t": {"n_target_classes": 3}, "square": {"focus": 0.5, "focus_min_fooled": 1}},
    "strong": {"*": {"restarts": STRONG_RESTARTS}},
}
"""Settings a preset gives its attacks, by cascade name; ``"*"`` applies to every attack of the preset (a
``restarts`` setting is skipped for attacks that have none).

``standard``'s APGD-T aims at the 3 most likely other classes: on the 20% closest examples of the fast-FGSM-trained
MNIST model of BENCHMARKS.md, 3 targets broke as many examples as 9 (8 and 7 of 82 with two seeds, both). Its
Square focuses within the closest 15%: after 1000 queries the half with the highest loss goes on to 5000 (see
:func:`advlab.attacks.square`); on the PGD- and fast-FGSM-trained MNIST models this broke what Square in full on
the closest 15% broke, with a fifth to a quarter fewer passes. Where its first 1000 queries broke nothing in the
share (``focus_min_fooled=1``), no example goes on: on the CIFAR-10 model of BENCHMARKS.md, where Square breaks
nothing, this saves 56,000 of the evaluation's 229,000 passes; on the MNIST-type models its first 1000 queries break
some, and nothing changes.
"""


def _closest_of(item: Any) -> tuple[Any, Closest | None]:
    """``(attack, closest)`` of a cascade item: a :class:`Closest`, a ``"name@fraction"`` string, or neither."""
    if isinstance(item, Closest):
        return item.attack, item
    if isinstance(item, str) and "@" in item:
        name, _, fraction = item.partition("@")
        try:
            value = float(fraction)
        except ValueError:
            raise ValueError(
                f"attacks: {item!r}: after '@' comes the fraction of the still-robust examples closest to breaking "
                "that the attack runs on, a number in (0, 1], e.g. 'square@0.1'"
            ) from None
        try:
            return name, Closest(name, value)
        except ValueError as exc:
            raise ValueError(
                f"attacks: {item!r}: {exc}; after '@' comes the share of the still-robust examples, in (0, 1]"
            ) from None
    return item, None


def _build(name: str, norm: str, options: dict[str, Any]) -> AttackConfig:
    """Config of a cascade name (alias or registered attack); a preset's ``restarts`` is skipped where none."""
    cls, _, _ = resolve(name, norm, argument="attacks")
    known = set(cls.spec.settings)
    options = {k: v for k, v in options.items() if k in known or k != "restarts"}
    return make_attack(name, norm=norm, argument="attacks", **options)


def _entry(given_item: Any, norm: str, preset: str | None, taken: set[str]) -> CascadeEntry:
    """The cascade entry of one item of ``attacks`` (a name, a config or a :class:`Closest`), labelled apart from the
    labels ``taken`` by the entries before it."""
    item, closest = _closest_of(given_item)
    if isinstance(item, AttackConfig):
        label, config = type(item).name or type(item).__name__.lower(), item
    elif isinstance(item, str):
        label = item.strip().lower()
        given = PRESET_OPTIONS.get(preset or "", {})
        config = _build(label, norm, {**given.get("*", {}), **given.get(label, {})})
        if label in ALIASES and ALIASES[label].per_norm:  # "cw": name the attack that runs for this norm
            label = type(config).name
    else:
        raise TypeError(f"attacks: expected attack names, AttackConfig or Closest instances, got {type(item).__name__}")
    cls = type(config)
    if norm not in cls.norms:
        raise ValueError(
            f"attacks: {label!r} does not support norm {norm!r} (it supports {list(cls.norms)}); "
            f"drop it or choose another norm. `advlab attacks --norm {norm}` lists the attacks that do."
        )
    if label in taken:
        i = 2
        while f"{label}#{i}" in taken:
            i += 1
        label = f"{label}#{i}"
    if closest is not None and closest.extend is not None and config.settings().get("focus", 1.0) < 1:
        raise ValueError(
            f"attacks: {label!r} focuses its own budget (focus < 1), which spans one share of examples; give it "
            "extend=None, or focus=1 to go on share by share"
        )
    return CascadeEntry(label, config, closest.fraction if closest else None, closest.extend if closest else None)


def resolve_attacks(attacks: Any, norm: str) -> tuple[str | None, list[CascadeEntry]]:
    """Turn ``attacks`` (a preset name, or a list of names / configs) into the cascade.

    Checks at once that every name exists and every attack supports ``norm``, so a bad list fails before
    any work.

    Returns:
        ``(preset or None, entries)``.

    Raises:
        ValueError: unknown preset or attack, an attack that does not support the norm, an empty list.
        TypeError: an entry that is neither a name nor an :class:`~advlab.attacks.AttackConfig`.
    """
    preset: str | None = None
    if isinstance(attacks, str) and attacks.strip().lower() in PRESETS:
        preset = attacks.strip().lower()
        names: list[Any] = list(PRESETS[preset])
    elif isinstance(attacks, str):
        if "," in attacks or "@" in attacks or is_attack(attacks):
            names = [a for a in attacks.split(",") if a.strip()]
        else:
            validation.check_choice(
                "attacks",
                attacks,
                list(PRESETS),
                "Give a preset name or a list of attack names, e.g. attacks=['pgd', 'apgd-ce'].",
            )
            names = []
    elif isinstance(attacks, (AttackConfig, Closest)):
        names = [attacks]
    elif isinstance(attacks, (list, tuple)):
        names = list(attacks)
    else:
        raise TypeError(
            f"attacks: expected a preset name ({', '.join(PRESETS)}) or a list of attack names/configs, "
            f"got {type(attacks).__name__}"
        )
    if preset is not None:  # a preset skips its per-norm aliases that have no attack for this norm (C&W for l1)
        names = [a for a in names if not (_closest_of(a)[0] in ALIASES and not ALIASES[_closest_of(a)[0]].covers(norm))]
    if not names:
        raise ValueError("attacks: the list is empty; give at least one attack, e.g. attacks=['pgd']")
    entries: list[CascadeEntry] = []
    for given_item in names:
        entries.append(_entry(given_item, norm, preset, {e.label for e in entries}))
    return preset, entries
