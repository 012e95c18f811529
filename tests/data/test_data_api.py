"""The public API on scikit-learn's digits (no files needed): shapes, values, split, Dataset methods, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from advlab.data import DATASETS, Dataset, DatasetInfo, load_dataset
from advlab.registry import Registry


@pytest.fixture(scope="module")
def digits_test() -> Dataset:
    return load_dataset("digits", split="test")


@pytest.fixture(scope="module")
def digits_train() -> Dataset:
    return load_dataset("digits", split="train")


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1).astype(np.float32)}


def test_digits_shapes_values_and_split(digits_train, digits_test):
    ref_x, ref_y = load_digits(return_X_y=True)
    assert len(digits_test) == 540 and len(digits_train) == 1257
    for ds in (digits_train, digits_test):
        assert ds.x.shape[1:] == (1, 8, 8) and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10 and ds.classes == [str(i) for i in range(10)]
        assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
        assert torch.equal(ds.x * 16, (ds.x * 16).round())  # values are k/16
    # the two splits partition load_digits: together they hold every image with its label, exactly once
    x_all = torch.cat([digits_train.x, digits_test.x]).numpy().reshape(-1, 64) * 16
    y_all = torch.cat([digits_train.y, digits_test.y]).numpy()
    order_ours = np.lexsort(np.c_[x_all, y_all].T)
    order_ref = np.lexsort(np.c_[ref_x, ref_y].T)
    assert np.array_equal(np.c_[x_all, y_all][order_ours], np.c_[ref_x, ref_y][order_ref])
    # stratified 30 % test split: each class holds 30 % of its images in test, up to rounding
    test_counts = np.bincount(digits_test.y.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.3 * np.bincount(ref_y)) <= 1)


def test_digits_is_deterministic_and_fresh(digits_test):
    again = load_dataset("digits", split="test")
    assert torch.equal(again.x, digits_test.x) and torch.equal(again.y, digits_test.y)
    again.x.zero_()  # callers may modify what they get: the next load is unaffected
    assert torch.equal(load_dataset("digits", split="test").x, digits_test.x)


def test_digits_mean_std_are_the_training_statistics(digits_train):
    assert digits_train.mean == pytest.approx((float(digits_train.x.double().mean()),), abs=1e-4)
    assert digits_train.std == pytest.approx((float(digits_train.x.double().std(unbiased=False)),), abs=1e-4)


def test_registry_info_and_aliases():
    assert isinstance(DATASETS, Registry)
    assert DATASETS.names() == ["cifar10", "digits", "fashion-mnist", "mnist"]
    for alias in ("fashion_mnist", "fmnist", "Fashion-MNIST"):
        assert alias in DATASETS and DATASETS.get(alias).name == "fashion-mnist"
    assert DATASETS.get("cifar-10").name == "cifar10"
    info = DATASETS.get("cifar10")
    assert isinstance(info, DatasetInfo)
    assert info.input_shape == (3, 32, 32) and info.num_classes == 10 and len(info.mean) == 3
    assert info.std == (0.2470, 0.2435, 0.2616) and "Krizhevsky" in info.citation
    assert DATASETS.get("mnist").mean == (0.1307,) and DATASETS.get("fmnist").std == (0.3530,)
    assert "arXiv:1708.07747" in DATASETS.get("fmnist").citation
    assert [s.name for s in DATASETS.get("mnist").files["test"]] == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"name": "mnsit"}, ValueError, "Did you mean 'mnist'"),
        ({"name": "cifar"}, ValueError, "Did you mean 'cifar10'"),
        ({"name": 10}, TypeError, "expected a name"),
        ({"name": "digits", "split": "validation"}, ValueError, r"split: expected one of \['train', 'test'\]"),
        ({"name": "digits", "n": 0}, ValueError, "n: expected an int >= 1, got 0"),
        ({"name": "digits", "n": -3}, ValueError, "n: expected an int >= 1"),
        ({"name": "digits", "n": 541}, ValueError, "asked for 541 examples but the digits test split has 540"),
        ({"name": "digits", "n": 2.5}, TypeError, "n: expected an int"),
        ({"name": "digits", "download": "yes"}, TypeError, "download"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        load_dataset(**kwargs)


def test_n_and_head_take_the_first_examples(digits_test):
    ds = load_dataset("digits", split="test", n=25)
    assert len(ds) == 25 and torch.equal(ds.x, digits_test.x[:25]) and torch.equal(ds.y, digits_test.y[:25])
    head = digits_test.head(25)
    assert torch.equal(head.x, ds.x) and head.name == "digits" and head.split == "test" and head.mean == ds.mean
    with pytest.raises(ValueError, match="asked for 541"):
        digits_test.head(541)
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        digits_test.head(0)


def test_subset_is_seeded_stratified_and_ordered(digits_test):
    before = torch.get_rng_state()
    sub = digits_test.subset(100, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    assert len(sub) == 100
    # stratified: every class gets 100 * its share, up to rounding (shares are 52..55 of 540)
    counts = np.bincount(sub.y.numpy(), minlength=10)
    share = np.bincount(digits_test.y.numpy(), minlength=10) * 100 / len(digits_test)
    assert counts.sum() == 100 and np.all(np.abs(counts - share) < 1)
    # the examples are real members, returned in file order
    rows = digits_test.x.reshape(len(digits_test), -1)
    index = [int((rows == r).all(1).nonzero()[0]) for r in sub.x.reshape(100, -1)]
    assert index == sorted(index) and len(set(index)) == 100
    assert torch.equal(digits_test.y[index], sub.y)
    # same seed -> same subset; another seed -> another subset
    assert torch.equal(digits_test.subset(100, seed=3).x, sub.x)
    assert not torch.equal(digits_test.subset(100, seed=4).x, sub.x)
    assert torch.equal(digits_test.subset(540).y, digits_test.y)


def test_subset_keeps_rare_classes_proportional():
    y = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    ds = Dataset(
        torch.zeros(100, 1, 2, 2), y, name="toy", split="test", classes=["a", "b", "c"], mean=(0.5,), std=(0.5,)
    )
    assert np.bincount(ds.subset(10, seed=0).y.numpy(), minlength=3).tolist() == [9, 1, 0]
    assert np.bincount(ds.subset(20, seed=1).y.numpy(), minlength=3).tolist() == [18, 2, 0]


def test_loader_batches_and_shuffling(digits_test):
    before = torch.get_rng_state()
    batches = list(digits_test.loader(128))
    assert [len(b[0]) for b in batches] == [128, 128, 128, 128, 28]
    assert torch.equal(torch.cat([b[0] for b in batches]), digits_test.x)
    shuffled = torch.cat([yb for _, yb in digits_test.loader(100, shuffle=True)])
    assert not torch.equal(shuffled, digits_test.y)
    assert torch.equal(shuffled.sort().values, digits_test.y.sort().values)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = torch.cat([xb for xb, _ in digits_test.loader(64, shuffle=True, generator=g1)])
    b = torch.cat([xb for xb, _ in digits_test.loader(64, shuffle=True, generator=g2)])
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.raises(ValueError, match="batch_size"):
        digits_test.loader(0)


def test_dataset_indexing_and_repr(digits_test):
    xi, yi = digits_test[3]
    assert torch.equal(xi, digits_test.x[3]) and int(yi) == int(digits_test.y[3])
    assert "digits" in repr(digits_test) and "n=540" in repr(digits_test)
