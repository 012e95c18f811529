"""Saved models of advlab.zoo: card contents, exact round trips, and every refusal (missing, corrupt, pickle, mismatch)."""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advlab import Classifier
from advlab.zoo import build_classifier, card_summary, count_parameters, load_model, save_model

DIGITS = (1, 8, 8)


def _x(shape, n=4, seed=1):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def saved(tmp_path):
    clf = build_classifier("wong-cnn", DIGITS, 10, mean=(0.5,), std=(0.25,), seed=3)
    folder = save_model(
        clf,
        tmp_path / "m1",
        dataset="digits",
        training={"defense": "pgd-at", "epochs": 5, "eps": 0.3},
        accuracy={"train": 0.99, "test": 0.987},
        seed=7,
        extra={"history": [1.0, 0.5]},
    )
    return clf, folder


def _card(folder):
    return json.loads((folder / "card.json").read_text())


def _write_card(folder, card):
    (folder / "card.json").write_text(json.dumps(card))


def _rehash(folder):
    """Make the card's SHA-256 agree with whatever model.safetensors now holds (to reach the parse checks)."""
    card = _card(folder)
    card["weights"]["sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    _write_card(folder, card)


# ---------------------------------------------------------------------- building
def test_build_classifier_normalises_inside():
    clf = build_classifier("softmax-regression", DIGITS, 10, mean=(0.5,), std=(0.25,))
    assert isinstance(clf, Classifier)
    x = _x(DIGITS)
    torch.testing.assert_close(clf(x), clf.module((x - 0.5) / 0.25))
    assert clf.input_shape == DIGITS and clf.num_classes == 10 and clf.bounds == (0.0, 1.0)
    assert clf.card["arch"] == "softmax-regression"
    assert clf.card["normalization"] == {"mean": [0.5], "std": [0.25]}
    full = build_classifier("maxout", DIGITS, 10, pieces=2)
    assert full.card["arch_kwargs"] == {"units": [240, 240], "pieces": 2, "dropout": 0.5, "input_dropout": 0.2}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2)}, "one per channel"),
        ({"mean": (0.5,)}, "give both"),
        ({"mean": (0.5,), "std": (0.0,)}, "positive"),
        ({"bounds": (1.0, 0.0)}, "low < high"),
    ],
)
def test_build_classifier_rejects_bad_normalisation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_classifier("wong-cnn", DIGITS, 10, **kwargs)


# ---------------------------------------------------------------------- the card
def test_card_contents(saved):
    clf, folder = saved
    card = _card(folder)
    weights = folder / "model.safetensors"
    assert card["format"] == "advlab-model" and card["format_version"] == 1
    assert card["arch"] == "wong-cnn" and card["arch_kwargs"] == {}
    assert card["dataset"] == "digits"
    assert card["input_shape"] == [1, 8, 8] and card["num_classes"] == 10
    assert card["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert card["bounds"] == [0.0, 1.0]
    assert card["training"] == {"defense": "pgd-at", "epochs": 5, "eps": 0.3}
    assert card["accuracy"] == {"train": 0.99, "test": 0.987}  # numbers, not strings
    assert card["seed"] == 7
    assert card["extra"] == {"history": [1.0, 0.5]}
    assert {"advlab", "torch", "python"} <= set(card["versions"])
    assert "git_commit" in card
    assert dt.datetime.fromisoformat(card["created_utc"]).tzinfo is not None
    assert card["weights"]["file"] == "model.safetensors"
    assert card["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert card["weights"]["parameters"] == count_parameters(clf.module) == 22_406
    assert clf.card == card  # the in-memory card is the one on disk
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]  # no temp files left


def test_accuracy_may_hold_counts_and_nested_robust_accuracies(tmp_path):
    clf = build_classifier("softmax-regression", DIGITS, 10)
    acc = {"train": 0.9, "train_examples_evaluated": 1000, "test": 0.8, "pgd": {"0.1": 0.5, "0.3": 0.25}}
    assert _card(save_model(clf, tmp_path / "m", accuracy=acc))["accuracy"] == acc


def test_normalisation_keeps_exact_decimals(tmp_path):
    clf = build_classifier("softmax-regression", (1, 28, 28), 10, mean=(0.1307,), std=(0.3081,))
    card = _card(save_model(clf, tmp_path / "m"))
    assert card["normalization"] == {"mean": [0.1307], "std": [0.3081]}


def test_card_fields_come_from_clf_card_unless_given(tmp_path):
    clf = build_classifier("softmax-regression", DIGITS, 10)
    clf.card["training"] = {"defense": "trades", "epochs": 2}
    clf.card["dataset"] = "digits"
    card = _card(save_model(clf, tmp_path / "a", accuracy={"test": 0.5}))
    assert card["training"] == {"defense": "trades", "epochs": 2} and card["dataset"] == "digits"
    card = _card(save_model(clf, tmp_path / "b", training={"epochs": 9}))
    assert card["training"] == {"epochs": 9} and card["accuracy"] == {"test": 0.5}


def test_card_summary():
    card = {
        "arch": "wong-cnn",
        "dataset": "mnist",
        "accuracy": {"train": 0.99, "test": 0.987},
        "training": {"epochs": 5},
    }
    assert card_summary(card) == "wong-cnn on mnist, test acc 98.7%, trained 5 epochs"
    card["training"] = {"defense": "pgd-at", "epochs": 1}
    assert card_summary(card) == "wong-cnn on mnist (defense pgd-at), test acc 98.7%, trained 1 epoch"
    assert card_summary({"arch": "mlp"}) == "mlp"
    assert card_summary({"arch": "rbf", "accuracy": {"train": 0.5}}) == "rbf, train acc 50.0%"


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    "name,shape,kwargs",
    [
        ("wong-cnn", DIGITS, {}),
        ("rbf", DIGITS, {}),
        ("maxout", DIGITS, {"units": (12, 8), "pieces": 3}),
        ("mlp", (64,), {"hidden": (16,)}),
        ("logistic-regression", DIGITS, {}),
    ],
)
def test_round_trip_gives_identical_logits(tmp_path, name, shape, kwargs):
    classes = 2 if name == "logistic-regression" else 10
    clf = build_classifier(name, shape, classes, mean=(0.5,), std=(0.25,), seed=11, **kwargs).eval()
    with torch.no_grad():
        for p in clf.module.parameters():  # move away from the seeded init so the test sees loaded weights
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    save_model(clf, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    x = _x(shape)
    assert torch.equal(loaded(x), clf(x))
    assert loaded.card["arch_kwargs"] == clf.card["arch_kwargs"]
    assert loaded.input_shape == shape and loaded.num_classes == classes
    assert not loaded.training
    assert all(p.requires_grad and not p.is_meta for p in loaded.parameters())  # ready to fine-tune


def test_round_trip_keeps_batch_norm_statistics(tmp_path):
    clf = build_classifier("preact-resnet18", (1, 9, 9), 3).eval()
    g = torch.Generator().manual_seed(0)
    for m in clf.module.modules():  # running statistics as after training (saved as buffers, not parameters)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.num_batches_tracked.fill_(1)
    save_model(clf, tmp_path / "r")
    loaded = load_model(tmp_path / "r")
    assert torch.equal(loaded.module.bn.running_mean, clf.module.bn.running_mean)
    assert int(loaded.module.bn.num_batches_tracked) == 1
    x = _x((1, 9, 9), n=2)
    with torch.no_grad():
        assert torch.equal(loaded(x), clf(x))


def test_load_accepts_folder_card_or_weights_path(saved):
    clf, folder = saved
    x = _x(DIGITS)
    ref = clf.eval()(x)
    for path in (folder, str(folder), folder / "card.json", folder / "model.safetensors"):
        loaded = load_model(path, device="cpu")
        assert torch.equal(loaded(x), ref)
        assert loaded.device == torch.device("cpu")
        assert card_summary(loaded.card) == "wong-cnn on digits (defense pgd-at), test acc 98.7%, trained 5 epochs"


def test_load_leaves_global_rng_alone(saved):
    _, folder = saved
    state = torch.get_rng_state()
    load_model(folder)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------- save errors
def test_save_refuses_models_it_cannot_rebuild(tmp_path):
    with pytest.raises(ValueError, match="build_classifier"):
        save_model(Classifier(torch.nn.Linear(4, 2), num_classes=2, input_shape=(4,)), tmp_path / "x")
    with pytest.raises(TypeError, match="Classifier"):
        save_model(torch.nn.Linear(4, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_save_validates_fields_before_writing(tmp_path):
    clf = build_classifier("softmax-regression", DIGITS, 10)
    with pytest.raises(ValueError, match=r"accuracy\['test'\]"):
        save_model(clf, tmp_path / "a", accuracy={"test": 98.7})  # a percentage, not a fraction
    with pytest.raises(TypeError, match=r"accuracy\['pgd'\]\['0.3'\]"):
        save_model(clf, tmp_path / "a", accuracy={"test": 0.9, "pgd": {"0.3": "89%"}})  # numbers, not strings
    with pytest.raises(ValueError, match="JSON"):
        save_model(clf, tmp_path / "b", extra={"obj": object()})
    with pytest.raises(TypeError, match="training"):
        save_model(clf, tmp_path / "c", training=[("epochs", 1)])
    assert not any((tmp_path / d).exists() for d in "abc")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="existing file"):
        save_model(clf, tmp_path / "file")


# ---------------------------------------------------------------------- load errors
def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'}: no such model folder"):
        load_model(tmp_path / "nope")


def test_folder_without_card(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "weights.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"card\.json: missing.*weights\.pt"):
        load_model(tmp_path / "m")


def test_card_not_json(saved):
    _, folder = saved
    (folder / "card.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{folder / 'card.json'}: not valid JSON"):
        load_model(folder)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: c.pop("arch_kwargs"), "missing key.*arch_kwargs"),
        (lambda c: c.pop("weights"), "missing key.*weights"),
        (lambda c: c.update(format="something-else"), "not an advlab model card"),
        (lambda c: c.update(format_version=3), "format_version 3 is not supported"),  # 2: cards with a network
        (lambda c: c.update(arch="resnet-9000"), "unknown arch 'resnet-9000'"),
        (lambda c: c.update(arch_kwargs={"hidden": [4]}), "cannot rebuild.*does not take 'hidden'"),
        (lambda c: c.update(input_shape=[64]), r"cannot rebuild.*needs images \(C, H, W\)"),
        (lambda c: c["weights"].update(file="../model.safetensors"), "plain file name"),
        (lambda c: c.update(normalization=[0.5]), "normalization"),
    ],
)
def test_bad_card(saved, edit, match):
    _, folder = saved
    card = _card(folder)
    edit(card)
    _write_card(folder, card)
    with pytest.raises(ValueError, match=match) as info:
        load_model(folder)
    assert str(folder / "card.json") in str(info.value)


def test_card_is_a_list(saved):
    _, folder = saved
    (folder / "card.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_model(folder)


def test_weights_missing(saved):
    _, folder = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=f"{folder / 'model.safetensors'}: weights file missing"):
        load_model(folder)


def test_weights_corrupt_sha_mismatch(saved):
    _, folder = saved
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip the last byte of the last tensor: still parses, but the hash differs
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path}: corrupt or replaced weights file: its SHA-256"):
        load_model(folder)


def test_weights_truncated_not_safetensors(saved):
    _, folder = saved
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    _rehash(folder)
    with pytest.raises(ValueError, match=f"{path}: not a valid safetensors file"):
        load_model(folder)


class _Payload:
    """Unpickling this object would create the marker file: proof of executed pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("keep_hash", [True, False])
def test_pickle_weights_are_refused_without_unpickling(saved, monkeypatch, tmp_path, keep_hash):
    _, folder = saved
    marker = tmp_path / "pwned"
    path = folder / "model.safetensors"
    torch.save({"0.weight": _Payload(marker)}, path)  # a torch.save pickle posing as the weights file
    assert not marker.exists()
    if keep_hash:
        _rehash(folder)  # the card even vouches for the file: only the format check stands in the way
    else:
        card = _card(folder)
        del card["weights"]["sha256"]
        _write_card(folder, card)
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append("torch.load"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append("pickle.load"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append("pickle.loads"))
    with pytest.raises(ValueError, match=f"{path}: not a valid safetensors file.*never unpickles"):
        load_model(folder)
    assert not marker.exists() and calls == []


def test_weights_do_not_match_the_architecture(saved):
    _, folder = saved
    card = _card(folder)
    card["num_classes"] = 5
    _write_card(folder, card)
    with pytest.raises(
        ValueError, match=r"shape mismatch \(2\): 7\.weight \(file \(10, 100\), model \(5, 100\)\), 7\.bias"
    ) as info:
        load_model(folder)
    assert str(folder / "model.safetensors") in str(info.value)

    card["num_classes"] = 10
    card["arch"] = "madry-cnn"
    _write_card(folder, card)
    with pytest.raises(
        ValueError,
        match=r"madry-cnn.*missing in the file \(4\): 3\.weight, 3\.bias, 9\.weight, 9\.bias; "
        r"unexpected in the file \(4\): .*shape mismatch \(4\): 0\.weight \(file \(16, 1, 4, 4\), model \(32, 1, 5, 5\)\)",
    ):
        load_model(folder)

    card["arch"] = "maxout"  # no name in common: the lists are cut after the first few
    card["arch_kwargs"] = {"units": [4], "pieces": 2, "dropout": 0.0, "input_dropout": 0.0}
    _write_card(folder, card)
    with pytest.raises(
        ValueError, match=r"unexpected in the file \(8\): 0\.bias, 0\.weight, 2\.bias, 2\.weight, 5\.bias and 3 more"
    ):
        load_model(folder)


def test_weights_with_a_tensor_removed(saved):
    clf, folder = saved
    state = {k: v for k, v in clf.module.state_dict().items() if k != "0.bias"}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    _rehash(folder)
    with pytest.raises(
        ValueError, match=r"missing in the file \(1\): 0\.bias; unexpected in the file \(1\): extra\.weight"
    ):
        load_model(folder)


def test_bad_device(saved):
    _, folder = saved
    with pytest.raises(ValueError, match="device"):
        load_model(folder, device="gpu7")
