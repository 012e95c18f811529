"""Fooling images by gradient ascent (Nguyen et al. 2015) and the rubbish-class rate of Gaussian noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import Classifier
from advlab.dataset_level.fooling import fooling_images, rubbish_class_rate


@pytest.mark.parametrize("start", ["noise", "blank"])
def test_fooling_images_reach_99_percent_on_a_small_trained_model(mlp_model, start):
    fool = fooling_images(mlp_model, start=start, steps=300, step_size=0.02, generator=0)
    assert fool.x.shape == (10, 1, 8, 8)
    assert float(fool.x.min()) >= 0 and float(fool.x.max()) <= 1
    assert fool.reached.sum() >= 8  # most classes
    # the reported confidences are the model's softmax on the returned images (an independent recomputation)
    with torch.no_grad():
        p = torch.softmax(mlp_model(fool.x), 1)[torch.arange(10), fool.classes]
    assert torch.allclose(p, fool.confidence, atol=1e-6)
    assert torch.equal(fool.reached, p >= 0.99)
    assert bool((fool.steps[fool.reached] < 300).all())
    record = fool.to_dict()
    assert len(record["classes"]) == 10 and record["fraction_reached"] == fool.fraction_reached


def test_l2_prior_keeps_images_closer_to_the_start(mlp_model):
    free = fooling_images(mlp_model, start="gray", steps=40, step_size=0.02, classes=[0, 3])
    tied = fooling_images(mlp_model, start="gray", steps=40, step_size=0.02, classes=[0, 3], l2=50.0)
    d = lambda r: (r.x - 0.5).reshape(2, -1).norm(dim=1)  # noqa: E731
    assert bool((d(tied) < d(free)).all())


class _ConstantLogits(nn.Module):
    def __init__(self, probs):
        super().__init__()
        self.register_buffer("logits", torch.log(torch.tensor(probs)))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_rubbish_rate_closed_forms():
    clf = Classifier(_ConstantLogits([0.6, 0.3, 0.1]), num_classes=3, input_shape=(4,))
    r = rubbish_class_rate(clf, n=50)
    assert r.fraction == 1.0 and r.mean_confidence == pytest.approx(0.6)
    assert r.class_counts == [50, 0, 0]
    assert rubbish_class_rate(clf, n=50, threshold=0.7).fraction == 0.0
    assert r.noise_mean == 0.5 and r.noise_std == 0.25  # no normalisation: box middle, quarter width
    assert "N(0.5, 0.25^2)" in r.distribution


def test_rubbish_rate_matches_a_manual_draw(mlp_model):
    r = rubbish_class_rate(mlp_model, n=300, mean=0.3, std=0.4, generator=7)
    g = torch.Generator().manual_seed(7)
    x = (0.3 + 0.4 * torch.randn((300, 1, 8, 8), generator=g)).clamp(0, 1)
    with torch.no_grad():
        conf = torch.softmax(mlp_model(x), 1).amax(1)
    assert r.fraction == pytest.approx(float((conf > 0.5).float().mean()))
    assert r.mean_confidence == pytest.approx(float(conf.mean()), abs=1e-6)


def test_rubbish_rate_defaults_to_the_models_normalisation(normalized_mlp_model):
    r = rubbish_class_rate(normalized_mlp_model, n=10)
    assert r.noise_mean == pytest.approx(0.3) and r.noise_std == pytest.approx(0.4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"confidence": 1.0}, "confidence"),
        ({"classes": [10]}, "classes"),
        ({"start": "white"}, "start"),
        ({"steps": 0}, "steps"),
        ({"step_size": -0.1}, "step_size"),
        ({"l2": -1.0}, "l2"),
    ],
)
def test_fooling_bad_input(mlp_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fooling_images(mlp_model, **kwargs)


def test_fooling_needs_an_input_shape():
    clf = Classifier(_ConstantLogits([0.5, 0.5]), num_classes=2)
    with pytest.raises(ValueError, match="input_shape"):
        fooling_images(clf)
    with pytest.raises(ValueError, match="std"):
        rubbish_class_rate(clf, input_shape=(3,), std=-1.0)
