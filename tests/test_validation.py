"""Input checks: every error names the argument, says what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlab import validation as v


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: v.check_int("steps", 1.5), TypeError, r"^steps: expected an int, got float 1.5"),
        (lambda: v.check_int("steps", True), TypeError, r"^steps: expected an int, got bool"),
        (lambda: v.check_int("steps", 0, minimum=1), ValueError, r"^steps: expected an int >= 1, got 0"),
        (lambda: v.check_int("batch", 9, maximum=8), ValueError, r"^batch: expected an int <= 8, got 9"),
        (lambda: v.check_float("step_size", "x"), TypeError, r"^step_size: expected a number, got str"),
        (lambda: v.check_float("decay", float("inf")), ValueError, r"^decay: expected a finite number"),
        (lambda: v.check_float("lr", 0.0, minimum=0.0, strict_min=True), ValueError, r"^lr: expected a number > 0.0"),
        (lambda: v.check_float("p", 1.5, maximum=1.0), ValueError, r"^p: expected a number <= 1.0, got 1.5"),
        (lambda: v.check_float("p", 1.0, maximum=1.0, strict_max=True), ValueError, r"^p: expected a number < 1.0"),
        (
            lambda: v.check_choice("loss", "mse", ["ce", "margin"]),
            ValueError,
            r"^loss: expected one of \['ce', 'margin'\], got 'mse'",
        ),
        (lambda: v.check_eps_list([]), ValueError, r"^eps: expected at least one value"),
        (lambda: v.check_eps_list([0.1, 0.05]), ValueError, r"^eps: expected strictly increasing"),
        (lambda: v.check_eps_list([0.1, -1]), ValueError, r"^eps\[1\]: expected a number >= 0.0"),
        (
            lambda: v.check_tensor_like("x", [1, 2]),
            TypeError,
            r"^x: expected a torch.Tensor or numpy.ndarray, got list",
        ),
    ],
)
def test_scalar_checks_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_scalar_checks_return_converted_values():
    assert v.check_int("steps", np.int64(3)) == 3 and isinstance(v.check_int("steps", np.int64(3)), int)
    assert v.check_float("eps", 1) == 1.0 and isinstance(v.check_float("eps", np.float32(0.5)), float)
    assert v.check_float("eps", torch.tensor(0.25)) == 0.25
    assert v.check_eps_list([0, 0.1, 0.3]) == [0.0, 0.1, 0.3]
    v.check_choice("norm", "l2", ["linf", "l2"])  # no error


def test_choice_remedy_is_appended():
    with pytest.raises(ValueError, match="Use lower case"):
        v.check_choice("norm", "L2", ["l2"], remedy="Use lower case.")


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (
            torch.zeros(2, 3, dtype=torch.int64),
            TypeError,
            r"^x: expected a floating-point tensor, got dtype torch.int64",
        ),
        (torch.zeros(3), ValueError, r"^x: expected a batch of shape \(N, \.\.\.\), got shape \(3,\)"),
        (torch.zeros(0, 3), ValueError, r"^x: the batch is empty"),
        (torch.tensor([[0.5, float("nan")], [0.1, 0.2]]), ValueError, r"^x: contains NaN or inf in 1 example"),
        (
            torch.tensor([[0.5, 1.5]]),
            ValueError,
            r"^x: values must lie inside bounds \(0.0, 1.0\), got range \[0.5, 1.5\]",
        ),
    ],
)
def test_check_input(x, exc, match):
    with pytest.raises(exc, match=match):
        v.check_input(x, (0.0, 1.0))


def test_check_input_uses_the_given_name():
    with pytest.raises(ValueError, match=r"^x_init: values must lie"):
        v.check_input(torch.full((1, 2), -0.5), (0.0, 1.0), name="x_init")
    v.check_input(torch.full((1, 2), -0.5), (-1.0, 1.0))  # inside other bounds: fine


@pytest.mark.parametrize(
    "y,n,k,exc,match",
    [
        (
            torch.zeros(2, 2, dtype=torch.long),
            2,
            10,
            ValueError,
            r"^y: expected a vector of class indices of shape \(2,\)",
        ),
        (torch.zeros(3), 3, 10, TypeError, r"^y: expected integer class indices, got dtype torch.float32"),
        (torch.zeros(3, dtype=torch.bool), 3, 10, TypeError, r"^y: expected integer class indices"),
        (torch.zeros(3, dtype=torch.long), 4, 10, ValueError, r"^y: expected 4 labels \(one per example of x\), got 3"),
        (torch.tensor([0, -1]), 2, 10, ValueError, r"^y: class indices must be >= 0, got -1"),
        (torch.tensor([0, 10]), 2, 10, ValueError, r"^y: class index 10 is out of range for a model with 10 classes"),
    ],
)
def test_check_labels(y, n, k, exc, match):
    with pytest.raises(exc, match=match):
        v.check_labels(y, n, k)


def test_check_labels_without_num_classes_and_name():
    v.check_labels(torch.tensor([0, 99]), 2, None)
    with pytest.raises(ValueError, match=r"^target: class index"):
        v.check_labels(torch.tensor([0, 5]), 2, 3, name="target")


def test_check_target():
    y = torch.tensor([1, 2, 3])
    v.check_target(torch.tensor([0, 0, 0]), y, 10)
    with pytest.raises(ValueError, match=r"^target: equals the true label for 2 example\(s\) \(first at index 1\)"):
        v.check_target(torch.tensor([0, 2, 3]), y, 10)
    with pytest.raises(ValueError, match=r"^target: expected 3 labels"):
        v.check_target(torch.tensor([0, 0]), y, 10)


def test_check_threat_args_names_each_field():
    with pytest.raises(ValueError, match=r"^norm: expected one of"):
        v.check_threat_args("L2", 0.1, (0, 1))
    with pytest.raises(ValueError, match=r"^eps: expected a radius >= 0, got -1.0"):
        v.check_threat_args("l2", -1, (0, 1))
    with pytest.raises(ValueError, match=r"^bounds: expected a pair"):
        v.check_threat_args("l2", 1, 1.0)
    v.check_threat_args("l2", 1, (float("-inf"), 1.0))  # an unbounded side is allowed (issue 14)
    with pytest.raises(ValueError, match=r"^bounds\[0\]: expected a number or ±inf, got nan"):
        v.check_threat_args("l2", 1, (float("nan"), 1.0))
    with pytest.raises(ValueError, match=r"^bounds: expected low < high"):
        v.check_threat_args("l2", 1, (1, 1))


def test_check_model_output():
    v.check_model_output(torch.zeros(4, 10), 4)
    with pytest.raises(TypeError, match=r"^model: expected the forward pass to return a tensor of logits, got tuple"):
        v.check_model_output((torch.zeros(4, 10),), 4)
    with pytest.raises(ValueError, match=r"^model: expected logits of shape \(4, num_classes\), got \(4, 10, 1\)"):
        v.check_model_output(torch.zeros(4, 10, 1), 4)
    with pytest.raises(ValueError, match=r"^model: expected logits of shape \(4, num_classes\), got \(3, 10\)"):
        v.check_model_output(torch.zeros(3, 10), 4)


def test_check_input_shape():
    v.check_input_shape(torch.zeros(2, 1, 8, 8), None)
    v.check_input_shape(torch.zeros(2, 1, 8, 8), (1, 8, 8))
    with pytest.raises(
        ValueError, match=r"^x: wrong rank for the model: .* Reshape with x.reshape\(-1, \*\(1, 8, 8\)\)"
    ):
        v.check_input_shape(torch.zeros(2, 64), (1, 8, 8))
    with pytest.raises(ValueError, match=r"^x: wrong shape .* expects 1 channel\(s\) first \(N, C, H, W\); got 3"):
        v.check_input_shape(torch.zeros(2, 3, 8, 8), (1, 8, 8))
    with pytest.raises(ValueError, match=r"^x: wrong shape"):
        v.check_input_shape(torch.zeros(2, 1, 8, 9), (1, 8, 8))


def test_library_warnings_point_at_the_users_line(mlp_model, digits_batch):
    """Whatever path inside advlab raises it, a warning names the user's file and line (so a filter on the user's
    module works): an attack's context manager (train mode), the attack loop (zero gradient), a direct call."""
    import copy
    import inspect

    from torch import nn

    from advlab import ThreatModel
    from advlab.attacks import fgsm, pgd
    from advlab.models import Classifier

    x, y = digits_batch
    threat = ThreatModel("linf", 0.1)
    train_mode = copy.deepcopy(mlp_model).train()
    flat = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Hardtanh(100, 101)), num_classes=10).eval()
    cases = [
        ("train mode", lambda: fgsm(train_mode, x, y, threat)),
        ("input gradient is zero", lambda: pgd(flat, x, y, threat, steps=2)),
        ("direct", lambda: v.warn("direct")),
    ]
    for match, call in cases:
        line = inspect.getsourcelines(call)[1]
        with pytest.warns(UserWarning, match=match) as rec:
            call()
        hits = [w for w in rec if match in str(w.message)]
        assert hits and all((w.filename, w.lineno) == (__file__, line) for w in hits), (
            match,
            [(w.filename, w.lineno) for w in hits],
        )


def test_as_xy_accepts_the_forms_users_have():
    import numpy as np

    from advlab.data import load_dataset
    from advlab.validation import as_xy

    digits = load_dataset("digits", "test", n=5)
    x, y = as_xy(digits)
    assert x is digits.x and torch.equal(y, digits.y)
    x, y = as_xy((np.zeros((3, 4)), np.array([0, 1, 2], dtype=np.int32)))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (3, 4)
    x, y = as_xy(torch.zeros(2, 3), labels="optional")
    assert y is None
    with pytest.raises(ValueError, match="train: labels are needed"):
        as_xy((torch.zeros(2, 3), None), "train")
    with pytest.raises(TypeError, match=r"data: expected a Dataset \(with .x and .y\) or a pair"):
        as_xy([1, 2, 3])
    with pytest.raises(TypeError, match="data x: expected a torch.Tensor or numpy.ndarray"):
        as_xy(([1.0], [0]))


def test_as_tensor_is_the_one_conversion_of_user_arrays():
    import numpy as np

    from advlab.validation import as_tensor

    assert as_tensor("x", np.zeros(3)).dtype == torch.float32  # numpy float64: numpy's default, not the model's
    assert as_tensor("x", torch.zeros(3, dtype=torch.float64)).dtype == torch.float64  # a float64 model's input
    assert as_tensor("x", torch.zeros(3, dtype=torch.float64), float32="float64").dtype == torch.float32
    assert as_tensor("x", torch.zeros(3, dtype=torch.float16), float32="all").dtype == torch.float32
    assert as_tensor("y", np.arange(3)).dtype == torch.int64
    with pytest.raises(TypeError, match="^x: expected a torch.Tensor or numpy.ndarray, got list"):
        as_tensor("x", [1.0])


# ---------------------------------------------------------------------- as_xy: the forms data comes in (issue 14)
def _xy(n: int = 10):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % 3


def test_as_xy_reads_a_dataloader_once_in_order():
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _xy(10)
    xt, yt = v.as_xy(DataLoader(TensorDataset(x, y), batch_size=3))
    assert torch.equal(xt, x) and torch.equal(yt, y) and yt.dtype == torch.int64
    # batches that are dicts, or inputs alone
    dicts = DataLoader([{"x": x[i], "y": y[i]} for i in range(10)], batch_size=4)
    xt, yt = v.as_xy(dicts)
    assert torch.equal(xt, x) and torch.equal(yt, y)
    xt, yt = v.as_xy(DataLoader(x, batch_size=4), labels="optional")
    assert torch.equal(xt, x) and yt is None
    with pytest.raises(ValueError, match="^data: labels are needed"):
        v.as_xy(DataLoader(x, batch_size=4))


def test_as_xy_refuses_a_shuffling_or_empty_dataloader():
    from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

    x, y = _xy(10)
    with pytest.raises(ValueError, match=r"^data: this DataLoader shuffles \(RandomSampler\).*shuffle=False"):
        v.as_xy(DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True))
    with pytest.raises(ValueError, match=r"shuffles \(SubsetRandomSampler\)"):
        v.as_xy(DataLoader(TensorDataset(x, y), batch_size=3, sampler=SubsetRandomSampler(range(5))))
    with pytest.raises(ValueError, match="^data: the DataLoader yielded no batches"):
        v.as_xy(DataLoader(TensorDataset(x[:0], y[:0]), batch_size=3))
    with pytest.raises(TypeError, match=r"^data \(batch 0\): expected batches \(x, y\).*got list of length 3"):
        v.as_xy(DataLoader(TensorDataset(x, y, y), batch_size=3))


def test_as_xy_reads_tensor_datasets_dicts_and_torch_datasets():
    from torch.utils.data import Dataset, TensorDataset

    x, y = _xy(6)
    for data in (TensorDataset(x, y), {"x": x, "y": y}, {"images": x.numpy(), "labels": y.tolist()}):
        xt, yt = v.as_xy(data)
        assert torch.equal(xt, x) and torch.equal(yt, y)
    xt, yt = v.as_xy(TensorDataset(x), labels="optional")
    assert yt is None

    class Pairs(Dataset):  # a map-style dataset returning (x, y) items, as users write them
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return x[i], int(y[i])

    xt, yt = v.as_xy(Pairs())
    assert torch.equal(xt, x) and torch.equal(yt, y)
    with pytest.raises(ValueError, match=r"^data: a dict of arrays needs the inputs under 'x'.*got keys \['a', 'b'\]"):
        v.as_xy({"a": x, "b": y})


def test_as_xy_accepts_lists_of_labels_and_refuses_class_names():
    import numpy as np

    x, _ = _xy(3)
    _, yt = v.as_xy((x, [2, 0, 1]))
    assert torch.equal(yt, torch.tensor([2, 0, 1]))
    _, yt = v.as_xy((x, (2, 0, 1)))
    assert yt.dtype == torch.int64
    assert torch.equal(v.as_labels("y", range(3)), torch.arange(3))
    assert torch.equal(v.as_labels("y", np.array([1, 2], dtype=np.uint8)), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"^data y: expected integer class indices, got strings such as 'cat'"):
        v.as_xy((x, ["cat", "dog", "cat"]))


def test_as_xy_never_rescales_uint8_images_silently():
    x = (torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"^data x: expected a floating-point tensor, got dtype torch.uint8.*/ 255"):
        v.as_xy((x, y))
    with pytest.raises(
        TypeError, match=r"^data x: expected a floating-point tensor, got dtype torch.int64.*x.float\(\)"
    ):
        v.as_xy((x.long(), y))
    xt, _ = v.as_xy((x.float() / 255, y))  # the explicit conversion works
    assert float(xt.max()) <= 1.0


def test_check_bounds():
    assert v.check_bounds("bounds", (0, 1)) == (0.0, 1.0)
    assert v.check_bounds("bounds", [float("-inf"), 3]) == (float("-inf"), 3.0)
    assert v.check_bounds("bounds", (torch.tensor(-1.0), 1)) == (-1.0, 1.0)
    with pytest.raises(ValueError, match=r"^box: expected a pair \(low, high\), got 0.5"):
        v.check_bounds("box", 0.5)
