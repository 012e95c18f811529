"""Turner et al.'s four-corner trigger, at full and at reduced amplitude, against the paper's pattern by hand."""

from __future__ import annotations

import pytest
import torch

from advlab.poisoning import PoisonedData, Trigger, stamp

# The paper's code ("all-corners"), corner by corner: W white (+1), B black (-1), rows top to bottom.
RIGHT = ("BBW", "BWB", "WBW")  # top-right and bottom-right corners
LEFT = ("WBB", "BWB", "WBW")  # top-left and bottom-left: the mirror image


def _oracle_signs(height: int, width: int) -> dict[tuple[int, int], float]:
    """(row, col) -> +1 (white) or -1 (black) for the 36 trigger pixels, written out from the tables above."""
    signs = {}
    for top in (0, height - 3):
        for left, block in ((0, LEFT), (width - 3, RIGHT)):
            for i, row in enumerate(block):
                for j, colour in enumerate(row):
                    signs[(top + i, left + j)] = 1.0 if colour == "W" else -1.0
    return signs


def _images(n: int = 4, shape: tuple[int, int, int] = (3, 8, 10)) -> torch.Tensor:
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))
    x[0] = 0.01  # near the lower bound: the reduced-amplitude black pixels clip at 0
    x[1] = 0.99  # near the upper bound: the white pixels clip at 1
    return x


def test_full_amplitude_corners_write_the_papers_pattern_and_nothing_else() -> None:
    x = _images()
    out = Trigger.corners((3, 8, 10)).apply(x)
    signs = _oracle_signs(8, 10)
    assert len(signs) == 36
    for r in range(8):
        for c in range(10):
            if (r, c) in signs:
                assert bool((out[:, :, r, c] == (1.0 if signs[(r, c)] > 0 else 0.0)).all()), (r, c)
            else:
                assert torch.equal(out[:, :, r, c], x[:, :, r, c]), (r, c)


@pytest.mark.parametrize("amplitude", [16 / 255, 64 / 255])
def test_reduced_amplitude_adds_plus_or_minus_the_amplitude_and_clips(amplitude: float) -> None:
    x = _images()
    out = Trigger.corners((3, 8, 10), amplitude=amplitude).apply(x)
    signs = _oracle_signs(8, 10)
    for r in range(8):
        for c in range(10):
            if (r, c) in signs:
                expected = torch.clamp(x[:, :, r, c] + signs[(r, c)] * amplitude, 0.0, 1.0)
                assert torch.allclose(out[:, :, r, c], expected, atol=1e-7, rtol=0), (r, c)
            else:
                assert torch.equal(out[:, :, r, c], x[:, :, r, c]), (r, c)
    assert float(out[0].min()) == 0.0 and float(out[1].max()) == 1.0  # the clipping happened


@pytest.mark.parametrize("amplitude", [None, 32 / 255])
def test_a_horizontal_flip_keeps_the_trigger(amplitude: float | None) -> None:
    x = _images()
    trigger = Trigger.corners((3, 8, 10), amplitude=amplitude)
    assert torch.equal(trigger.apply(x).flip(-1), trigger.apply(x.flip(-1)))


def test_patch_and_blend_triggers_are_the_plain_blend_bit_for_bit() -> None:
    x = _images(shape=(1, 6, 6))
    for trigger in (Trigger.patch((1, 6, 6), size=2), Trigger.blend(torch.rand(1, 6, 6), alpha=0.3)):
        assert trigger.offset is None
        assert torch.equal(trigger.apply(x), x * (1 - trigger.mask) + trigger.pattern * trigger.mask)


def test_an_additive_trigger_survives_save_and_load(tmp_path) -> None:
    x, y = _images(6) / 2, torch.arange(6) % 2  # data on [0, 0.5]: bounds other than the default survive too
    trigger = Trigger.corners((3, 8, 10), amplitude=32 / 255, bounds=(0.0, 0.5))
    p = stamp(x, y, torch.tensor([1, 3]), trigger, None, attack="clean_label", target=1)
    q = PoisonedData.load(p.save(tmp_path / "poison"))
    assert q.trigger is not None and q.trigger.offset is not None
    assert torch.equal(q.trigger.apply(x), trigger.apply(x)) and q.trigger.bounds == (0.0, 0.5)
    assert float(q.trigger.apply(x).max()) == 0.5  # clipped at the saved upper bound, not at 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 5}, "size"),
        ({"amplitude": 0.0}, "amplitude"),
        ({"amplitude": 1.5}, "amplitude"),
        ({"bounds": (1.0, 0.0)}, "bounds"),
    ],
)
def test_bad_corner_triggers_are_refused_naming_the_option(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Trigger.corners((3, 8, 10), **kwargs)


def test_the_report_draws_what_an_additive_trigger_adds_not_a_blank_pattern() -> None:
    from advlab.reports.poisoning import trigger_figure, trigger_panels

    panels = dict(
        (title.split(",")[0], image) for image, title in trigger_panels(Trigger.corners((3, 8, 10), 3, 16 / 255))
    )
    assert set(panels) == {"added", "where"}  # no pattern or mask panel: the mask is zero, nothing is written
    signs = _oracle_signs(8, 10)
    for r in range(8):
        for c in range(10):
            expected = 0.5 + 0.5 * signs.get((r, c), 0.0)  # white +1 -> 1, black -1 -> 0, untouched -> grey
            assert torch.allclose(torch.from_numpy(panels["added"][:, r, c]), torch.tensor(expected), atol=1e-6)
            assert (panels["where"][:, r, c] == float((r, c) in signs)).all()
    assert trigger_figure(Trigger.corners((3, 8, 10), 3, 16 / 255)).startswith(b"\x89PNG")


def test_the_report_draws_a_written_triggers_pattern_and_mask() -> None:
    from advlab.reports.poisoning import trigger_panels

    trigger = Trigger.corners((3, 8, 10))
    (pattern, first), (mask, second) = trigger_panels(trigger)
    assert (first, second) == ("pattern", "mask")
    signs = _oracle_signs(8, 10)
    assert mask.sum() == 3 * len(signs)
    assert all(pattern[0, r, c] == (1.0 if s > 0 else 0.0) for (r, c), s in signs.items())
