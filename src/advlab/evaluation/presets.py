"""The attack cascades of :func:`advlab.evaluate`: presets (fast, standard, strong) and name resolution.

``standard`` is AutoAttack's ensemble (Croce & Hein 2020, arXiv:2003.01690) — APGD-CE, APGD-T (targeted DLR),
a minimum-norm attack and Square — with FMN (Pintor et al. 2021, arXiv:2102.12827) in place of FAB-T: both
are white-box minimum-norm attacks that find points near the decision boundary, and FMN is the one advlab
implements. Its Square focuses AutoAttack's query budget on the examples it can still fool, with restarts
(:data:`PRESET_OPTIONS`): stronger than one run of the paper's Square, in less time. ``strong`` adds restarts to
every attack that has them, runs Square in full on every example, and adds the Carlini-Wagner attack of the norm.

``fast`` is PGD-40 with a random start: a first look, and often an optimistic one. On the MNIST models of
BENCHMARKS.md (linf 0.3, 1000 images) it leaves 92.9% (PGD-trained) and 87.1% (fast-FGSM-trained) where APGD-CE
with 40 iterations, in about the same time, leaves 91.1% and 83.9%, and ``standard`` 87.3% and 78.2%. The
masking checks flag such gaps (Square breaking what PGD left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advlab import validation
from advlab.attacks.registry import ALIASES, AttackConfig, is_attack, make_attack, resolve

PRESETS: dict[str, tuple[str, ...]] = {
    "fast": ("pgd",),
    "standard": ("apgd-ce", "apgd-t", "fmn", "square"),
    "strong": ("apgd-ce", "apgd-t", "fmn", "square", "cw"),
}
"""Attack names of each preset, in cascade order (``cw`` means ``cw-l2`` for l2 and ``cw-linf`` for linf)."""

STRONG_RESTARTS = 5
"""Restarts given to every attack of the ``strong`` preset that has a ``restarts`` setting."""

PRESET_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "standard": {"square": {"focus": 0.1, "restarts": 3}},
    "strong": {"*": {"restarts": STRONG_RESTARTS}},
}
"""Settings a preset gives its attacks, by cascade name; ``"*"`` applies to every attack of the preset (a
``restarts`` setting is skipped for attacks that have none).

``standard``'s Square spends AutoAttack's budget where it pays: after 1000 queries only the 10% of the examples
with the highest loss go on, and they get three runs of 5000 queries instead of one (see
:func:`advlab.attacks.square`). On the MNIST PGD model of BENCHMARKS.md this breaks 22-25 examples (five seeds)
where one run of the paper's Square breaks 20-24, in about 60% of its time.
"""


@dataclass(frozen=True)
class CascadeEntry:
    """One attack of the cascade: its label in reports and its config."""

    label: str
    config: AttackConfig

    def describe(self) -> dict[str, Any]:
        cls = type(self.config)
        return {
            "label": self.label,
            "name": cls.name,
            "settings": self.config.settings(),
            "minimum_norm": bool(cls.minimum_norm),
            "needs_gradients": bool(cls.needs_gradients),
            "query_based": bool(cls.query_based),
        }


def _build(name: str, norm: str, options: dict[str, Any]) -> AttackConfig:
    """Config of a cascade name (alias or registered attack); a preset's ``restarts`` is skipped where none."""
    cls, _, _ = resolve(name, norm, argument="attacks")
    known = set(cls.spec.settings)
    options = {k: v for k, v in options.items() if k in known or k != "restarts"}
    return make_attack(name, norm=norm, argument="attacks", **options)


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
        if "," in attacks or is_attack(attacks):
            names = [a for a in attacks.split(",") if a.strip()]
        else:
            validation.check_choice(
                "attacks",
                attacks,
                list(PRESETS),
                "Give a preset name or a list of attack names, e.g. attacks=['pgd', 'apgd-ce'].",
            )
            names = []
    elif isinstance(attacks, AttackConfig):
        names = [attacks]
    elif isinstance(attacks, (list, tuple)):
        names = list(attacks)
    else:
        raise TypeError(
            f"attacks: expected a preset name ({', '.join(PRESETS)}) or a list of attack names/configs, "
            f"got {type(attacks).__name__}"
        )
    if preset is not None:  # a preset skips its per-norm aliases that have no attack for this norm (C&W for l1)
        names = [a for a in names if not (a in ALIASES and not ALIASES[a].covers(norm))]
    if not names:
        raise ValueError("attacks: the list is empty; give at least one attack, e.g. attacks=['pgd']")
    entries: list[CascadeEntry] = []
    for item in names:
        if isinstance(item, AttackConfig):
            label, config = type(item).name or type(item).__name__.lower(), item
        elif isinstance(item, str):
            label = item.strip().lower()
            given = PRESET_OPTIONS.get(preset or "", {})
            config = _build(label, norm, {**given.get("*", {}), **given.get(label, {})})
            if label in ALIASES and ALIASES[label].per_norm:  # "cw": name the attack that runs for this norm
                label = type(config).name
        else:
            raise TypeError(f"attacks: expected attack names or AttackConfig instances, got {type(item).__name__}")
        cls = type(config)
        if norm not in cls.norms:
            raise ValueError(
                f"attacks: {label!r} does not support norm {norm!r} (it supports {list(cls.norms)}); "
                f"drop it or choose another norm. `advlab attacks --norm {norm}` lists the attacks that do."
            )
        taken = {e.label for e in entries}
        if label in taken:
            i = 2
            while f"{label}#{i}" in taken:
                i += 1
            label = f"{label}#{i}"
        entries.append(CascadeEntry(label, config))
    return preset, entries
