"""The real files in the shared data folder ($ADVLAB_DATA, default /work/shared/data) against the values published
in its README and widely known facts (first labels and pixels); skipped when the folder is absent."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.data import _files, load_dataset

ROOT = Path(os.environ.get("ADVLAB_DATA") or "/work/shared/data")
needs = {
    name: pytest.mark.skipif(not (ROOT / name).is_dir(), reason=f"{ROOT / name} is absent (set ADVLAB_DATA)")
    for name in ("mnist", "fashion-mnist", "cifar10")
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))


def _moments(x: torch.Tensor) -> tuple[float, float]:
    std, mean = torch.std_mean(x, correction=0)  # float32 with torch's cascaded sums: ~1e-6 accurate here
    return float(mean), float(std)


@needs["mnist"]
def test_mnist_test_split():
    ds = load_dataset("mnist", split="test", data_dir=ROOT, download=False)
    assert ds.x.shape == (10000, 1, 28, 28) and ds.y.dtype == torch.int64
    assert np.bincount(ds.y.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    mean, std = _moments(ds.x)
    assert mean == pytest.approx(0.1325, abs=5e-5) and std == pytest.approx(0.3105, abs=5e-5)
    assert ds.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert torch.equal((ds.x[:50] * 255).round() / 255, ds.x[:50])  # exact k/255 values


@needs["mnist"]
def test_mnist_repeat_load_uses_the_caches(monkeypatch):
    load_dataset("mnist", split="test", data_dir=ROOT, download=False)
    calls = []
    monkeypatch.setattr(_files, "file_digest", lambda *a: calls.append(a))
    monkeypatch.setattr("advlab.data.idx.read_idx", lambda *a, **k: pytest.fail("decoded twice"))
    ds = load_dataset("mnist", split="test", data_dir=ROOT, download=False, n=3)
    assert calls == [] and ds.y.tolist() == [7, 2, 1]


@pytest.mark.slow
@needs["mnist"]
def test_mnist_train_split():  # the only test that loads a 60000-image training set
    ds = load_dataset("mnist", split="train", data_dir=ROOT, download=False)
    assert len(ds) == 60000
    assert np.bincount(ds.y.numpy()).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    mean, std = _moments(ds.x)
    assert mean == pytest.approx(ds.mean[0], abs=5e-5) and std == pytest.approx(ds.std[0], abs=5e-5)
    assert ds.y[:5].tolist() == [5, 0, 4, 1, 9]


@needs["fashion-mnist"]
def test_fashion_mnist_test_split():
    ds = load_dataset("fmnist", split="test", data_dir=ROOT, download=False)
    assert ds.name == "fashion-mnist" and ds.x.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y.numpy()).tolist() == [1000] * 10
    mean, std = _moments(ds.x)
    assert mean == pytest.approx(0.2868, abs=5e-5) and std == pytest.approx(0.3524, abs=5e-5)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)


@needs["cifar10"]
def test_cifar10_partial_test_split(caplog):
    with caplog.at_level(logging.WARNING, logger="advlab.data.cifar10"):
        ds = load_dataset("cifar10", split="test", data_dir=ROOT, download=False)
    if len(ds) == 1000:  # the shared folder holds the 1000-per-batch subset
        assert np.bincount(ds.y.numpy()).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
        mean = ds.x.double().mean((0, 2, 3))
        assert mean.tolist() == pytest.approx([0.4967, 0.4867, 0.4510], abs=5e-5)
    assert ds.x.shape[1:] == (3, 32, 32) and ds.y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert (ds.x[0, 0, 0, :3] * 255).round().tolist() == [158, 159, 165]
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@needs["cifar10"]
def test_cifar10_partial_train_split():
    ds = load_dataset("cifar10", split="train", data_dir=ROOT, download=False)
    assert ds.y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert (ds.x[0, 0, 0, :3] * 255).round().tolist() == [59, 43, 50]
    if len(ds) == 5000:  # batch 2 starts at index 1000 in the subset
        assert torch.equal(ds.x[1000], load_dataset("cifar10", split="train", data_dir=ROOT, n=1001).x[1000])
