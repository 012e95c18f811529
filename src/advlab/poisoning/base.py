"""What every poisoning attack and defense shares: triggers, the poisoned dataset as a value, and the measures.

A poisoning attack never modifies the clean data it is given: it returns a :class:`PoisonedData`, a poisoned copy
that records which rows changed (or were inserted), their original labels, the trigger, the target and the seed,
so an experiment can be reproduced and audited. ``PoisonedData.save`` writes it atomically (one safetensors file
with the tensors, one JSON manifest) and :meth:`PoisonedData.load` reads it back without unpickling anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import io, validation
from advlab.models import predict

MANIFEST = "manifest.json"
"""The JSON manifest of a saved :class:`PoisonedData`."""
TENSORS = "poisoned.safetensors"
"""The tensors of a saved :class:`PoisonedData`."""
POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
"""Where :meth:`Trigger.patch` puts its patch."""


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger on the model's input scale: ``x' = (1 - mask) * x + mask * pattern``.

    A patch trigger (BadNets) has a 0/1 mask; a blended trigger (Chen et al. 2017) has ``mask = alpha``
    everywhere. ``pattern`` has the shape of one input ``(C, H, W)``; ``mask`` has shape ``(1, H, W)`` or
    ``(C, H, W)``. An additive trigger (Turner et al.'s reduced-amplitude pattern, :meth:`corners`) also has an
    ``offset``, added after the blend and clipped to ``bounds``:
    ``x' = clip((1 - mask) * x + mask * pattern + offset, *bounds)``.

    Attributes:
        pattern: what the trigger writes, shape ``(C, H, W)``, values inside the data's bounds.
        mask: how much of the pattern replaces each input value, in ``[0, 1]``.
        name: a short description for reports (``"3x3 checkerboard, bottom-right"``).
        offset: what the trigger adds, shape ``(1, H, W)`` or ``(C, H, W)``; None (the default) for none.
        bounds: the input box the result of an ``offset`` is clipped to (unused without one).
    """

    pattern: torch.Tensor
    mask: torch.Tensor
    name: str = "trigger"
    offset: torch.Tensor | None = None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.pattern.dim() != 3:
            raise ValueError(f"trigger: pattern must have shape (C, H, W), got {tuple(self.pattern.shape)}")
        if self.mask.dim() != 3 or self.mask.shape[1:] != self.pattern.shape[1:]:
            raise ValueError(
                f"trigger: mask must have shape (1 or C, H, W) matching the pattern {tuple(self.pattern.shape)}, "
                f"got {tuple(self.mask.shape)}"
            )
        if self.mask.shape[0] not in (1, self.pattern.shape[0]):
            raise ValueError(
                f"trigger: mask has {self.mask.shape[0]} channels; the pattern has {self.pattern.shape[0]}"
            )
        if float(self.mask.min()) < 0 or float(self.mask.max()) > 1:
            raise ValueError("trigger: mask values must lie in [0, 1]")
        if self.offset is not None and (
            self.offset.dim() != 3
            or self.offset.shape[1:] != self.pattern.shape[1:]
            or self.offset.shape[0] not in (1, self.pattern.shape[0])
        ):
            raise ValueError(
                f"trigger: offset must have shape (1 or C, H, W) matching the pattern {tuple(self.pattern.shape)}, "
                f"got {tuple(self.offset.shape)}"
            )

    @classmethod
    def patch(
        cls,
        input_shape: Sequence[int],
        size: int = 3,
        position: str = "bottom-right",
        value: float | str = "checkerboard",
        bounds: tuple[float, float] = (0.0, 1.0),
        margin: int = 0,
    ) -> Trigger:
        """A square patch stamped in a corner (Gu et al. 2017, BadNets).

        A patch on the image's very edge (``margin=0``, the BadNets placement) is nearly invisible to a network whose
        convolutions have no padding, such as Carlini & Wagner's CIFAR-10 CNN (``cifar-cnn`` in the zoo): an edge
        pixel reaches one output position per layer where an inner pixel reaches nine (3x3 kernels). There a
        ``margin`` of a few pixels makes the backdoor take (BENCHMARKS.md, "Poisoning": 10% BadNets on the CIFAR-10
        subset, 12-17% attack success at the edge, 100% four pixels in).

        Args:
            input_shape: one input's shape ``(C, H, W)``.
            size: side of the square patch in pixels.
            position: one of :data:`POSITIONS`.
            value: ``"checkerboard"`` (alternating the two bounds, the BadNets pattern), ``"white"`` (the upper
                bound) or a number inside ``bounds``.
            bounds: the input's value range.
            margin: pixels between the patch and the two image edges of its corner (0: on the edges).

        Returns:
            The trigger.

        Raises:
            ValueError: ``size`` or ``margin`` out of range, the patch and its margin larger than the image, or an
                unknown ``position``.

        Examples:
            >>> t = Trigger.patch((1, 28, 28), size=3)
            >>> int(t.mask.sum())
            9
            >>> int(Trigger.patch((1, 28, 28), size=3, margin=4).mask[0, 21:24, 21:24].sum())
            9
        """
        channels, height, width = check_input_shape(input_shape)
        validation.check_int("size", size, minimum=1)
        validation.check_int("margin", margin, minimum=0)
        if size + margin > min(height, width):
            raise ValueError(
                f"size: a {size}x{size} trigger {margin} pixels from the edges does not fit a {height}x{width} image; "
                "use a smaller size or margin"
            )
        validation.check_choice("position", position, POSITIONS)
        low, high = float(bounds[0]), float(bounds[1])
        square = _patch_values(value, size, low, high)
        top = height - size - margin if position.startswith("bottom") else margin
        left = width - size - margin if position.endswith("right") else margin
        pattern = torch.full((channels, height, width), low)
        mask = torch.zeros(1, height, width)
        pattern[:, top : top + size, left : left + size] = square
        mask[:, top : top + size, left : left + size] = 1.0
        name = f"{size}x{size} {value if isinstance(value, str) else f'value {value:g}'} patch, {position}"
        name += f", {margin} px in" if margin else ""
        return cls(pattern=pattern, mask=mask, name=name)

    @classmethod
    def blend(cls, pattern: torch.Tensor, alpha: float = 0.2, name: str = "blended pattern") -> Trigger:
        """A whole-image pattern blended into the input (Chen et al. 2017): ``(1 - alpha) x + alpha pattern``.

        Args:
            pattern: shape ``(C, H, W)`` on the input's scale (for example uniform noise, or a picture).
            alpha: blend ratio in ``(0, 1]``; Chen et al. use 0.2 when poisoning.
            name: a description for reports.

        Returns:
            The trigger.

        Examples:
            >>> t = Trigger.blend(torch.rand(1, 28, 28), alpha=0.2)
            >>> round(float(t.mask.max()), 3)
            0.2
        """
        validation.check_float("alpha", alpha, minimum=0.0, maximum=1.0, strict_min=True)
        pattern = validation.as_tensor("pattern", pattern).float()
        mask = torch.full((1, *pattern.shape[1:]), float(alpha))
        return cls(pattern=pattern, mask=mask, name=f"{name}, alpha {alpha:g}")

    @classmethod
    def corners(
        cls,
        input_shape: Sequence[int],
        size: int = 3,
        amplitude: float | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> Trigger:
        """Turner et al.'s (2019) label-consistent backdoor trigger: a black-and-white square in all four corners.

        The square stamped in the two right corners is a checkerboard (white where row + column is even, counted
        from the square's top-left) whose top-left pixel is black; the two left corners carry its mirror image, so
        the whole trigger is unchanged by a horizontal flip (the training augmentation keeps it intact). For
        ``size=3`` this is the pattern of the paper's code (``all-corners``). Every channel gets the same values.

        At full amplitude (``amplitude=None``) the squares replace the pixels with the two bounds. With an
        ``amplitude`` ("reduced amplitude", the paper's 16/255, 32/255 and 64/255 on CIFAR-10) the pattern is
        added instead: ``+amplitude`` on its white pixels, ``-amplitude`` on its black ones, the result clipped
        to ``bounds`` (an additive trigger: ``offset`` set, ``mask`` zero).

        Args:
            input_shape: one input's shape ``(C, H, W)``.
            size: side of each square in pixels (at most half the image's smaller side, so the four do not
                overlap).
            amplitude: None for the full-amplitude pattern, or the change added to each trigger pixel, in
                ``(0, high - low]`` on the input's scale.
            bounds: the input's value range.

        Returns:
            The trigger.

        Raises:
            ValueError: a bad ``input_shape``, a ``size`` whose squares overlap, or an ``amplitude`` out of range.

        Examples:
            >>> t = Trigger.corners((3, 32, 32))
            >>> int(t.mask.sum()), torch.equal(t.pattern, t.pattern.flip(-1))
            (36, True)
            >>> reduced = Trigger.corners((3, 32, 32), amplitude=16 / 255)
            >>> round(float(reduced.offset.abs().max()) * 255)
            16
        """
        channels, height, width = check_input_shape(input_shape)
        validation.check_int("size", size, minimum=1)
        if 2 * size > min(height, width):
            raise ValueError(
                f"size: four {size}x{size} squares overlap in a {height}x{width} image; use size "
                f"{min(height, width) // 2} or less"
            )
        low, high = validation.check_bounds("bounds", bounds)
        grid = torch.arange(size)
        white = (grid[:, None] + grid[None, :]) % 2 == 0
        white[0, 0] = False
        square = torch.where(white, 1.0, -1.0)
        sign = torch.zeros(height, width)
        for top in (0, height - size):
            sign[top : top + size, width - size :] = square
            sign[top : top + size, :size] = square.flip(1)
        where = (sign != 0).float()[None]
        if amplitude is None:
            pattern = torch.where(sign > 0, high, low)[None].expand(channels, height, width).clone()
            return cls(pattern=pattern, mask=where, name=f"{size}x{size} pattern, four corners", bounds=(low, high))
        validation.check_float("amplitude", amplitude, minimum=0.0, maximum=high - low, strict_min=True)
        return cls(
            pattern=torch.full((channels, height, width), low),
            mask=torch.zeros(1, height, width),
            name=f"{size}x{size} pattern, four corners, amplitude {amplitude:.4g}",
            offset=(sign * float(amplitude))[None],
            bounds=(low, high),
        )

    def check_fits(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` unless the trigger has the shape of one input of ``x`` (N, C, H, W)."""
        if tuple(x.shape[1:]) != tuple(self.pattern.shape):
            raise ValueError(
                f"trigger: its pattern has shape {tuple(self.pattern.shape)} but {name} holds inputs of shape "
                f"{tuple(x.shape[1:])}; build the trigger for the data's (C, H, W) (channel count and size)"
            )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the trigger stamped on every input (a new tensor; ``x`` is not modified)."""
        self.check_fits(x)
        mask = self.mask.to(x.device, x.dtype)
        out = x * (1 - mask) + self.pattern.to(x.device, x.dtype) * mask
        if self.offset is None:
            return out
        return (out + self.offset.to(x.device, x.dtype)).clamp(*self.bounds)


def _patch_values(value: float | str, size: int, low: float, high: float) -> torch.Tensor:
    if value == "checkerboard":
        grid = torch.arange(size)
        return torch.where((grid[:, None] + grid[None, :]) % 2 == 0, high, low)
    if value == "white":
        return torch.full((size, size), high)
    if isinstance(value, str):
        raise ValueError(f"value: expected 'checkerboard', 'white' or a number, got {value!r}")
    validation.check_float("value", value, minimum=low, maximum=high)
    return torch.full((size, size), float(value))


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``, refusing anything else with a message naming the argument."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape: expected one image's (C, H, W), got {shape}")
    return shape[0], shape[1], shape[2]


def check_rate(rate: float, name: str = "rate") -> float:
    """A poison rate in ``(0, 1]``."""
    return validation.check_float(name, rate, minimum=0.0, maximum=1.0, strict_min=True)


def check_target(target: int, num_classes: int, name: str = "target") -> int:
    """A target class of the data."""
    return validation.check_int(name, target, minimum=0, maximum=num_classes - 1)


def number_of_classes(y: torch.Tensor, num_classes: int | None = None) -> int:
    """``num_classes`` when given (checked against the labels), else one more than the largest label."""
    found = int(y.max()) + 1 if y.numel() else 0
    if num_classes is None:
        return found
    validation.check_int("num_classes", num_classes, minimum=1)
    if found > num_classes:
        raise ValueError(f"num_classes: the labels go up to {found - 1}, so num_classes must be at least {found}")
    return num_classes


def choose(count: int, among: torch.Tensor, generator: torch.Generator | None, name: str = "rate") -> torch.Tensor:
    """``count`` distinct entries of ``among`` (a vector of indices) drawn without replacement, sorted.

    Raises:
        ValueError: more entries asked for than exist, naming ``name``.
    """
    if count > among.numel():
        raise ValueError(f"{name}: asks for {count} examples but only {among.numel()} are eligible; lower {name}")
    order = torch.randperm(among.numel(), generator=generator)[:count]
    return among[order].sort().values


def generator_of(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (a fresh random seed when None)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(validation.check_int("seed", seed, minimum=0))
    return generator


@dataclass(frozen=True)
class PoisonedData:
    """A poisoned copy of a training set, with the record of what was done to it.

    Rows ``indices`` of ``x``/``y`` are the poisons: modified copies of clean rows, or rows appended at the end
    (``inserted`` of them, whose original label is -1). The clean data the attack was given is untouched.

    Attributes:
        x: the poisoned training inputs.
        y: the poisoned training labels.
        indices: rows of ``x``/``y`` that are poisons, sorted, int64.
        original_labels: the clean labels of those rows (-1 for inserted rows).
        attack: the attack's name (``"badnets"``).
        settings: the attack's settings, as recorded in the manifest.
        seed: the seed the attack drew with (None if it drew nothing).
        trigger: the backdoor trigger, for backdoor attacks.
        target: the target class, for targeted attacks (all-to-one backdoors, clean-label attacks).
        inserted: how many rows were appended to the clean data.
        extra: further tensors an attack records (the target image of a feature-collision attack...).
    """

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor
    original_labels: torch.Tensor
    attack: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    trigger: Trigger | None = None
    target: int | None = None
    inserted: int = 0
    extra: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        if self.indices.shape != self.original_labels.shape:
            raise ValueError("indices and original_labels must have the same length")

    @property
    def n_poisons(self) -> int:
        """How many rows are poisons."""
        return int(self.indices.numel())

    @property
    def rate(self) -> float:
        """Poisons as a share of the poisoned training set."""
        return self.n_poisons / max(1, int(self.x.shape[0]))

    def is_poison(self) -> torch.Tensor:
        """A boolean vector over the rows of ``x``: True for the poisons."""
        mask = torch.zeros(self.x.shape[0], dtype=torch.bool)
        mask[self.indices] = True
        return mask

    def without(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set with ``rows`` removed (what a sanitising defense retrains on)."""
        keep = torch.ones(self.x.shape[0], dtype=torch.bool)
        keep[rows] = False
        return self.x[keep], self.y[keep]

    def manifest(self) -> dict[str, Any]:
        """The JSON-able record: attack, settings, seed, target, trigger, counts and the changed rows."""
        return {
            "attack": self.attack,
            "settings": dict(self.settings),
            "seed": self.seed,
            "target": self.target,
            "trigger": None if self.trigger is None else self.trigger.name,
            "n_train": int(self.x.shape[0]),
            "n_poisons": self.n_poisons,
            "inserted": self.inserted,
            "rate": self.rate,
            "indices": self.indices.tolist(),
            "original_labels": self.original_labels.tolist(),
            "extra": sorted(self.extra),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write :data:`TENSORS` and :data:`MANIFEST` into ``directory`` (created), each atomically.

        Returns:
            The directory.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"x": self.x, "y": self.y, "indices": self.indices, "original_labels": self.original_labels}
        if self.trigger is not None:
            tensors["trigger_pattern"] = self.trigger.pattern
            tensors["trigger_mask"] = self.trigger.mask
            if self.trigger.offset is not None:
                tensors["trigger_offset"] = self.trigger.offset
                tensors["trigger_bounds"] = torch.tensor(self.trigger.bounds, dtype=torch.float64)
        tensors.update({f"extra.{k}": v for k, v in self.extra.items()})
        io.save_safetensors(folder / TENSORS, tensors)
        io.write_json(folder / MANIFEST, self.manifest())
        return folder

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PoisonedData:
        """Read what :meth:`save` wrote (no pickle is executed)."""
        from safetensors.torch import load_file

        folder = Path(directory)
        for name in (MANIFEST, TENSORS):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: no {name}; is this a folder that PoisonedData.save wrote?")
        manifest = io.read_json(folder / MANIFEST)
        tensors = load_file(str(folder / TENSORS))
        trigger = None
        if "trigger_pattern" in tensors:
            low, high = tensors["trigger_bounds"].tolist() if "trigger_bounds" in tensors else (0.0, 1.0)
            trigger = Trigger(
                tensors["trigger_pattern"], tensors["trigger_mask"], manifest["trigger"],
                offset=tensors.get("trigger_offset"), bounds=(low, high),
            )  # fmt: skip
        extra = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
        return cls(
            x=tensors["x"],
            y=tensors["y"],
            indices=tensors["indices"],
            original_labels=tensors["original_labels"],
            attack=manifest["attack"],
            settings=manifest["settings"],
            seed=manifest["seed"],
            trigger=trigger,
            target=manifest["target"],
            inserted=manifest["inserted"],
            extra=extra,
        )


def stamp(
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    trigger: Trigger,
    labels: torch.Tensor | int | None,
    *,
    attack: str,
    settings: Mapping[str, Any] | None = None,
    seed: int | None = None,
    target: int | None = None,
) -> PoisonedData:
    """A poisoned copy of ``(x, y)`` whose ``rows`` carry ``trigger`` and, unless ``labels`` is None, new labels.

    The one place triggers are written into training data: BadNets (all-to-one: ``labels=target``; all-to-all:
    ``labels=(y[rows] + 1) % num_classes``), Blend, and the clean-label backdoor (``labels=None``) call it.

    Args:
        x: clean training inputs ``(N, C, H, W)`` (not modified).
        y: clean training labels ``(N,)`` (not modified).
        rows: the rows to poison (int64 indices).
        trigger: the trigger to stamp.
        labels: the poisons' new labels: a class, a vector of ``len(rows)`` classes, or None to keep them.
        attack: the attack's name for the manifest.
        settings: the attack's settings for the manifest.
        seed: the seed the rows were drawn with.
        target: the target class, if any.

    Returns:
        The poisoned copy.
    """
    trigger.check_fits(x)
    rows = rows.to(torch.int64).sort().values
    if rows.numel() and (int(rows[0]) < 0 or int(rows[-1]) >= x.shape[0]):
        raise ValueError(
            f"rows: indices must lie in [0, {x.shape[0]}) (the rows of x), got {int(rows[0])}..{int(rows[-1])}"
        )
    x_poisoned, y_poisoned = x.clone(), y.clone()
    x_poisoned[rows] = trigger.apply(x[rows])
    if labels is not None:
        y_poisoned[rows] = labels if isinstance(labels, int) else labels.to(y.dtype)
    return PoisonedData(
        x=x_poisoned,
        y=y_poisoned,
        indices=rows,
        original_labels=y[rows].clone(),
        attack=attack,
        settings=dict(settings or {}),
        seed=seed,
        trigger=trigger,
        target=target,
    )


def attack_success_rate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    trigger: Trigger,
    target: int | None = None,
    batch_size: int = 500,
) -> float:
    """The backdoor's attack success rate, as BackdoorBench and the papers define it.

    All-to-one (``target`` given): the share of triggered test inputs *not of the target class* that the model
    classifies as ``target``. All-to-all (``target=None``): the share of triggered test inputs classified as
    ``(y + 1) % num_classes``, the label BadNets' all-to-all attack trains towards.

    Args:
        model: the (poisoned) classifier.
        x: clean test inputs.
        y: their labels.
        trigger: the trigger.
        target: the all-to-one target class, or None for all-to-all.
        batch_size: prediction batch size.

    Returns:
        The rate in ``[0, 1]`` (0.0 when no test input qualifies).
    """
    keep = y != target if target is not None else torch.ones_like(y, dtype=torch.bool)
    if not bool(keep.any()):
        return 0.0
    logits = predict(model, trigger.apply(x[keep]), batch_size=batch_size, logits=True)
    if target is not None:
        wanted = torch.full_like(y[keep], target)
    else:
        wanted = (y[keep] + 1) % logits.shape[1]
    return float((logits.argmax(1).cpu() == wanted.cpu()).float().mean())


@dataclass(frozen=True)
class Detection:
    """How well a defense found the poisons: the rows it flagged, against the rows that were poisons.

    Attributes:
        flagged: the rows the defense flagged (int64, sorted).
        poisons: the rows that are poisons.
        n_train: the size of the training set.
    """

    flagged: torch.Tensor
    poisons: torch.Tensor
    n_train: int

    @property
    def true_positives(self) -> int:
        """Flagged rows that are poisons."""
        return int(torch.isin(self.flagged, self.poisons).sum())

    @property
    def precision(self) -> float:
        """Share of flagged rows that are poisons (1.0 when nothing is flagged)."""
        return self.true_positives / self.flagged.numel() if self.flagged.numel() else 1.0

    @property
    def recall(self) -> float:
        """Share of poisons flagged (1.0 when there are no poisons)."""
        return self.true_positives / self.poisons.numel() if self.poisons.numel() else 1.0

    def summary(self) -> dict[str, float | int]:
        """Counts, precision and recall, for reports."""
        return {
            "flagged": int(self.flagged.numel()),
            "poisons": int(self.poisons.numel()),
            "true_positives": self.true_positives,
            "precision": self.precision,
            "recall": self.recall,
        }
