"""Figures: PNG bytes, written atomically when a path is given; grids for grey, colour and flat inputs."""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest
import torch

from advlab.reports import example_grid, robustness_curve
from advlab.reports.figures import attack_bars

PNG = b"\x89PNG\r\n\x1a\n"


def _size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(png)).size


def test_example_grid_signature_is_stable():
    params = list(inspect.signature(example_grid).parameters)
    assert params[:7] == ["x", "x_adv", "y", "pred_clean", "pred_adv", "classes", "path"]


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (3, 3, 6, 6), (2, 64), (2, 5)])
def test_example_grid_shapes(tmp_path, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    x_adv = (x + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    y = torch.arange(shape[0]) % 3
    png = example_grid(x, x_adv, y, y, (y + 1) % 3, ["a", "b", "c"], tmp_path / "g.png")
    assert png.startswith(PNG)
    assert (tmp_path / "g.png").read_bytes() == png
    w, h = _size(png)
    assert w > h * 0.3 and h > 100  # three rows of images
    # numpy input and no class names work too
    assert example_grid(x.numpy(), x_adv.numpy(), y.numpy(), y.numpy(), y.numpy(), None, None).startswith(PNG)


def test_example_grid_more_columns_is_wider():
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(8, dtype=torch.long)
    w2 = _size(example_grid(x[:2], x[:2], y[:2], y[:2], y[:2], None, None))[0]
    w8 = _size(example_grid(x, x, y, y, y, None, None))[0]
    assert w8 > 2 * w2


def test_curve_and_bars(toy_report):
    curve = robustness_curve(
        [
            {
                "label": "m",
                "eps": [0.1, 0.3],
                "accuracy": [0.5, 0.2],
                "low": [0.4, 0.1],
                "high": [0.6, 0.3],
                "clean": 0.9,
            }
        ],
        "linf",
    )
    assert curve.startswith(PNG)
    assert attack_bars(toy_report).startswith(PNG)
    assert example_grid(np.zeros((0, 4)), np.zeros((0, 4)), [], [], [], None, None).startswith(PNG)
