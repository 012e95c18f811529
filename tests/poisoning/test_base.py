"""The poisoned dataset as a value, triggers, and the measures every poisoning attack and defense reports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.poisoning import Detection, PoisonedData, Trigger, attack_success_rate, stamp


def _data(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 6, 6, generator=g), torch.arange(n) % 3


def test_patch_trigger_writes_a_checkerboard_in_the_corner_and_leaves_the_rest() -> None:
    x, _ = _data(4)
    t = Trigger.patch((1, 6, 6), size=2, position="top-left")
    out = t.apply(x)
    assert torch.equal(out[:, 0, :2, :2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(4, 2, 2))
    assert torch.equal(out[:, :, 2:, :], x[:, :, 2:, :]) and torch.equal(out[:, :, :, 2:], x[:, :, :, 2:])


@pytest.mark.parametrize(
    ("position", "top", "left"),
    [("bottom-right", 3, 4), ("bottom-left", 3, 1), ("top-right", 1, 4), ("top-left", 1, 1)],
)
def test_patch_trigger_margin_moves_the_patch_off_the_edges(position: str, top: int, left: int) -> None:
    # (1, 6, 7) images, a 2x2 patch one pixel from its corner's two edges: the corners by hand.
    t = Trigger.patch((1, 6, 7), size=2, position=position, margin=1)
    mask = torch.zeros(1, 6, 7)
    mask[:, top : top + 2, left : left + 2] = 1
    assert torch.equal(t.mask, mask)
    assert torch.equal(t.pattern[:, top : top + 2, left : left + 2], torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    assert t.name == f"2x2 checkerboard patch, {position}, 1 px in"
    assert Trigger.patch((1, 6, 7), size=2, position=position).name == f"2x2 checkerboard patch, {position}"


def test_an_edge_patch_reaches_fewer_units_of_a_network_without_padding() -> None:
    # Why the margin exists: cifar-cnn's 3x3 convolutions have no padding, so a patch on the image's edge reaches
    # fewer positions of the last feature map than the same patch four pixels in (counted by perturbing the patch).
    from advlab import zoo

    net = zoo.create("cifar-cnn", input_shape=(3, 32, 32), num_classes=10, seed=0).eval()
    assert isinstance(net, nn.Sequential)
    features = nn.Sequential(*list(net)[:-6])  # up to the Flatten: the last feature map
    assert isinstance(features[-1], nn.Flatten)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def reached(margin: int) -> int:
        stamped = Trigger.patch((3, 32, 32), size=3, margin=margin).apply(x)
        with torch.no_grad():
            return int((features(stamped) != features(x)).sum())

    assert 0 < reached(0) < reached(4)


def test_blend_trigger_is_the_convex_combination() -> None:
    x, _ = _data(3)
    pattern = torch.rand(1, 6, 6)
    out = Trigger.blend(pattern, alpha=0.25).apply(x)
    assert torch.allclose(out, 0.75 * x + 0.25 * pattern)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Trigger.patch((1, 6, 6), size=7), "size"),
        (lambda: Trigger.patch((1, 6, 6), position="middle"), "position"),
        (lambda: Trigger.patch((1, 6, 6), size=3, margin=4), "margin"),
        (lambda: Trigger.patch((1, 6, 6), margin=-1), "margin"),
        (lambda: Trigger.blend(torch.rand(1, 6, 6), alpha=0.0), "alpha"),
        (lambda: Trigger.patch((3, 6, 6)).apply(torch.rand(2, 1, 6, 6)), "channel"),
    ],
)
def test_bad_triggers_are_refused_naming_the_option(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_stamp_leaves_the_clean_data_untouched_and_records_what_changed() -> None:
    x, y = _data()
    x0, y0 = x.clone(), y.clone()
    rows = torch.tensor([7, 2, 11])
    p = stamp(x, y, rows, Trigger.patch((1, 6, 6)), 0, attack="badnets", seed=3, target=0)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert p.indices.tolist() == [2, 7, 11]
    assert p.original_labels.tolist() == y0[[2, 7, 11]].tolist()
    assert p.y[[2, 7, 11]].tolist() == [0, 0, 0]
    changed = (p.x != x).flatten(1).any(1) | (p.y != y)
    assert set(changed.nonzero().flatten().tolist()) == {2, 7, 11}
    assert p.is_poison().nonzero().flatten().tolist() == [2, 7, 11]
    assert p.rate == pytest.approx(3 / 20)


def test_save_and_load_round_trip_without_pickle(tmp_path) -> None:
    x, y = _data()
    p = stamp(x, y, torch.tensor([1, 4]), Trigger.blend(torch.rand(1, 6, 6)), None, attack="blend", seed=1, target=2)
    p = PoisonedData(**{**p.__dict__, "extra": {"target_image": torch.ones(1, 6, 6)}})
    p.save(tmp_path / "poison")
    q = PoisonedData.load(tmp_path / "poison")
    assert torch.equal(q.x, p.x) and torch.equal(q.y, p.y) and torch.equal(q.indices, p.indices)
    assert q.trigger is not None and torch.equal(q.trigger.pattern, p.trigger.pattern)
    assert q.manifest() == p.manifest() and q.target == 2 and torch.equal(q.extra["target_image"], torch.ones(1, 6, 6))
    with pytest.raises(FileNotFoundError, match="manifest"):
        PoisonedData.load(tmp_path)


class _CornerDetector(nn.Module):
    """Predicts class 2 when the bottom-right pixel is 1, else class 0: a perfect backdoor by construction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = (x[:, 0, -1, -1] == 1.0).float()
        return torch.stack([1 - hit, torch.zeros_like(hit), hit], 1)


def test_attack_success_rate_counts_only_inputs_not_of_the_target_class() -> None:
    x = torch.zeros(6, 1, 6, 6)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    trigger = Trigger.patch((1, 6, 6), size=1, value="white")
    assert attack_success_rate(_CornerDetector(), x, y, trigger, target=2) == 1.0
    assert attack_success_rate(_CornerDetector(), x, y, trigger, target=0) == 0.0
    # all-to-all: the wanted label is y + 1; only the two class-1 inputs want class 2
    assert attack_success_rate(_CornerDetector(), x, y, trigger, target=None) == pytest.approx(2 / 6)


def test_detection_precision_and_recall() -> None:
    d = Detection(flagged=torch.tensor([1, 2, 3, 4]), poisons=torch.tensor([2, 4, 9]), n_train=10)
    assert d.true_positives == 2 and d.precision == 0.5 and d.recall == pytest.approx(2 / 3)
    assert Detection(torch.tensor([], dtype=torch.long), torch.tensor([1]), 5).precision == 1.0


def test_stamp_refuses_rows_outside_the_data() -> None:
    x, y = _data(5)
    with pytest.raises(ValueError, match=r"rows: indices must lie in \[0, 5\)"):
        stamp(x, y, torch.tensor([1, 7]), Trigger.patch((1, 6, 6)), 0, attack="badnets")
