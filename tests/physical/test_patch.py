"""Adversarial patch (Brown et al. 2017): pasting (pixel-exact), placement inside the image, training, errors."""

from __future__ import annotations

import pytest
import torch

from advlab.physical.patch import (
    AdversarialPatch,
    apply_patch,
    patch_mask,
    patch_success_rate,
    sample_placements,
    train_patch,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_patch_is_pasted_at_the_sampled_location_pixel_for_pixel():
    x = torch.rand(20, 3, 12, 10, generator=_gen(1))
    patch = torch.rand(3, 4, 3, generator=_gen(2))
    pl = sample_placements(20, (12, 10), (4, 3), _gen(3))
    out = apply_patch(x, patch, pl.top_left, scale=pl.scale, angle=pl.angle)
    for i in range(20):
        r, c = (int(v) for v in pl.top_left[i])
        assert 0 <= r <= 12 - 4 and 0 <= c <= 10 - 3
        expected = x[i].clone()
        expected[:, r : r + 4, c : c + 3] = patch
        assert torch.allclose(out[i], expected, atol=1e-6)
    # every whole-pixel position is reachable
    seen = {tuple(int(v) for v in t) for t in sample_placements(2000, (12, 10), (4, 3), _gen(4)).top_left}
    assert seen == {(r, c) for r in range(9) for c in range(8)}


def test_rotated_patch_by_90_degrees_equals_rot90_and_circle_mask_keeps_corners():
    x = torch.zeros(1, 1, 9, 9)
    patch = torch.rand(1, 5, 5, generator=_gen(5))
    tl = torch.tensor([[2.0, 1.0]])
    out = apply_patch(x, patch, tl, angle=90.0)
    assert torch.allclose(out[0, 0, 2:7, 1:6], torch.rot90(patch, 1, dims=(1, 2))[0], atol=1e-6)
    mask = patch_mask((5, 5), "circle")
    assert mask[0, 0, 0] == 0 and mask[0, 2, 2] == 1
    bg = torch.full((1, 1, 9, 9), 0.3)
    out = apply_patch(bg, torch.ones(1, 5, 5), tl, mask=mask)
    assert float(out[0, 0, 2, 1]) == pytest.approx(0.3)  # outside the disc: background
    assert float(out[0, 0, 4, 3]) == pytest.approx(1.0)  # centre: patch


def test_scaled_rotated_patch_stays_inside_the_image():
    # paste the same placement into the image and into a 10-pixel larger canvas shifted accordingly:
    # if nothing of the patch is cut off by the image border, both show the same total mask mass
    n, size = 200, (6, 4)
    pl = sample_placements(n, (16, 16), size, _gen(6), scale=(0.6, 1.4), rotation=(-40, 40))
    ones = torch.ones(1, *size)
    small = apply_patch(torch.zeros(n, 1, 16, 16), ones, pl.top_left, scale=pl.scale, angle=pl.angle)
    big = apply_patch(torch.zeros(n, 1, 36, 36), ones, pl.top_left + 10, scale=pl.scale, angle=pl.angle)
    assert torch.allclose(small.sum((1, 2, 3)), big.sum((1, 2, 3)), atol=1e-4)
    assert float(small.min()) >= 0 and float(small.max()) <= 1 + 1e-6


def test_patch_covering_the_whole_image_becomes_a_fooling_image(softmax_model, digits):
    # with the patch as large as the image there is one placement, and training must reach the target
    patch = train_patch(softmax_model, digits["x_train"][:300], 3, patch_size=8, epochs=2, lr=0.1, generator=0)
    assert patch.success_rate_train == 1.0
    assert patch_success_rate(softmax_model, digits["x_test"], patch, y=digits["y_test"]) == 1.0


def test_trained_patch_beats_a_random_patch_of_the_same_size(softmax_model, digits):
    target = 8
    patch = train_patch(
        softmax_model,
        digits["x_train"],
        target,
        patch_size=4,
        y=digits["y_train"],
        epochs=3,
        lr=0.1,
        rotation=(-15, 15),
        generator=0,
    )
    assert patch.patch.shape == (1, 4, 4)
    assert float(patch.patch.min()) >= 0 and float(patch.patch.max()) <= 1
    rate = patch_success_rate(softmax_model, digits["x_test"], patch, y=digits["y_test"], draws=3, generator=1)
    control = AdversarialPatch(torch.rand(1, 4, 4, generator=_gen(9)), patch.mask, target, rotation=patch.rotation)
    base = patch_success_rate(softmax_model, digits["x_test"], control, y=digits["y_test"], draws=3, generator=1)
    assert rate > 0.1 and rate > 2 * base  # seeded; a random 4x4 patch already biases toward 8
    # the same seed gives the same patch
    once = train_patch(softmax_model, digits["x_train"][:200], target, patch_size=4, epochs=1, generator=0)
    twice = train_patch(softmax_model, digits["x_train"][:200], target, patch_size=4, epochs=1, generator=0)
    assert torch.equal(once.patch, twice.patch)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patch_size": 9}, "patch_size"),
        ({"patch_size": (4, 9)}, "patch_size"),
        ({"patch_size": 6, "rotation": (-45, 45)}, "patch_size"),  # the rotated box no longer fits 8x8
        ({"patch_size": 5, "scale": (1.0, 2.0)}, "patch_size"),
        ({"patch_size": 0}, "patch_size"),
        ({"target": 10}, "target"),
        ({"shape": "star"}, "shape"),
        ({"rotation": (10, -10)}, "rotation"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_patch_bad_input(softmax_model, digits, kwargs, match):
    args = {"target": 1, "patch_size": 3, **kwargs}
    target = args.pop("target")
    with pytest.raises(ValueError, match=match):
        train_patch(softmax_model, digits["x_train"][:8], target, **args)
