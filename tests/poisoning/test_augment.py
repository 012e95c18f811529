"""Random crops with padding and flips: victims' training augmentation and Witches' Brew's differentiable one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.defenses import DEFENSES
from advlab.poisoning.augment import random_crop_flip
from advlab.poisoning.gradient_matching import Alignment
from advlab.poisoning.training import Training, augmenting, train_model


def _windows(x: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop of ``x`` padded by ``padding`` zeros, and their mirror images (the independent oracle)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (padding,) * 4)
    crops = [padded[..., i : i + h, j : j + w] for i in range(2 * padding + 1) for j in range(2 * padding + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_each_image_is_a_crop_of_itself_padded_by_4_maybe_flipped_with_both_kinds_drawn() -> None:
    x = torch.rand(64, 3, 32, 32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    flipped = 0
    for image, result in zip(x, out, strict=True):
        matches = [k for k, w in enumerate(_windows(image, 4)) if torch.equal(w, result)]
        assert matches, "not a crop of the padded image nor its mirror"
        flipped += matches[0] >= 81
    assert 10 < flipped < 54  # about half are flipped
    assert not torch.equal(out, x) and not torch.equal(out, x.flip(-1))


def test_switched_off_it_is_the_identity_and_the_draws_follow_the_generator() -> None:
    x = torch.rand(4, 1, 8, 8)
    assert random_crop_flip(x, torch.Generator(), padding=0, flip=False) is x
    one = random_crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(one, random_crop_flip(x, torch.Generator().manual_seed(5)))
    only_flips = random_crop_flip(x, torch.Generator().manual_seed(1), padding=0)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(only_flips, x, strict=True))
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, torch.Generator(), padding=-1)
    with pytest.raises(ValueError, match="x: expected images"):
        random_crop_flip(x[0], torch.Generator())


def test_the_gradient_flows_back_to_the_images_through_the_crop() -> None:
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    out = random_crop_flip(x, torch.Generator().manual_seed(2), padding=2)
    weights = torch.rand_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    # the oracle: the pixel kept at each output place receives that place's weight, the cropped-off ones nothing
    expected = torch.zeros_like(x)
    for n in range(2):
        for i in range(6):
            for j in range(6):
                hit = (x[n, 0] == out[n, 0, i, j]).nonzero()
                if out[n, 0, i, j] != 0:
                    expected[n, 0, hit[0, 0], hit[0, 1]] += weights[n, 0, i, j]
    assert torch.allclose(grad, expected)
    assert 0 < int((grad == 0).sum()) < x.numel()  # some border pixels were cropped away, most were kept


MODEL = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))


def test_the_alignment_loss_with_augmentation_is_that_of_the_augmented_poisons_and_reaches_them() -> None:
    torch.manual_seed(0)
    targets, poisons, labels = torch.rand(1, 3, 4, 4), torch.rand(6, 3, 4, 4), torch.randint(0, 5, (6,))
    alignment = Alignment.of(MODEL, targets, torch.tensor([2]))
    plain = alignment.loss(poisons, labels)
    augmented = alignment.loss(poisons, labels, torch.Generator().manual_seed(3))
    by_hand = alignment.loss(random_crop_flip(poisons, torch.Generator().manual_seed(3), padding=1), labels)
    assert torch.equal(augmented, by_hand) and not torch.equal(augmented, plain)
    x = poisons.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(alignment.loss(x, labels, torch.Generator().manual_seed(3)), x)
    assert float(grad.abs().sum()) > 0


def test_victims_train_on_crops_and_flips_of_their_batches() -> None:
    seen: list[torch.Tensor] = []
    base = DEFENSES.get("standard")

    class Recording(base):  # type: ignore[misc,valid-type]
        def training_step(self, model, x, y, epoch):  # type: ignore[no-untyped-def]
            seen.append(x.detach().clone())
            return super().training_step(model, x, y, epoch)

    x, y = torch.rand(32, 3, 16, 16), torch.randint(0, 3, (32,))
    trainer = augmenting(Recording)(epochs=1, batch_size=32, seed=0, progress=False)
    assert isinstance(trainer, Recording) and augmenting(Recording) is type(trainer)
    trainer.fit(nn.Sequential(nn.Flatten(), nn.Linear(768, 3)), (x, y))
    (batch,) = seen
    assert batch.shape == x.shape
    assert sum(any(torch.equal(image, source) for source in x) for image in batch) < 8  # few left as they were
    for image in batch:  # each batch image is a crop (padding 4) or its mirror of some training image
        assert any(torch.equal(w, image) for source in x for w in _windows(source, 4))


def test_training_with_augment_records_it_and_differs_from_without() -> None:
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 2, (40,))
    settings = {"arch": "mlp", "epochs": 1, "batch_size": 20}
    plain = train_model(x, y, Training((1, 8, 8), 2, **settings))
    augmented = train_model(x, y, Training((1, 8, 8), 2, augment=True, **settings))
    assert augmented.card["training"]["augment"] == "crop-flip" and "augment" not in plain.card["training"]
    assert Training((1, 8, 8), 2, augment=True).record()["augment"] is True
    weights = [next(m.parameters()) for m in (plain, augmented)]
    assert not torch.equal(*weights)
