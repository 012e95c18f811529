"""Models from anywhere: a user's own network as a factory + weights, a torch.export program, a TorchScript file;
sidecar JSON; user networks in model folders (save_model, import_model); every unreadable file in one line."""

from __future__ import annotations

import builtins
import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from advlab import Classifier
from advlab.zoo import (
    ExportedModule,
    ModelInfo,
    build_classifier,
    import_model,
    load_model,
    read_sidecar,
    save_model,
    sidecar_path,
)
from advlab.zoo.files import sniff

DIGITS = [1, 8, 8]


def _x(n=6, seed=1):
    return torch.rand(n, *DIGITS, generator=torch.Generator().manual_seed(seed))


def _logits(clf, x):
    clf.cpu_channels_last = False  # the module's own layout, so the same network gives the same logits to the bit
    with clf.attack_mode(), torch.no_grad():
        return clf(x)


@pytest.fixture(scope="module")
def reference(user_model):
    x = _x()
    with torch.no_grad():
        return x, user_model["net"](x)


# ---------------------------------------------------------------------- every form, the same network
@pytest.mark.parametrize("weights", ["safetensors", "state_dict", "checkpoint"])
def test_factory_file_with_weights(user_model, reference, weights):
    x, ref = reference
    clf = load_model(user_model["spec"], weights=user_model[weights], info={"input_shape": DIGITS})
    assert isinstance(clf, Classifier) and not clf.training
    assert torch.equal(_logits(clf, x), ref)
    assert clf.input_shape == (1, 8, 8) and clf.num_classes == 10  # classes from a forward pass
    assert clf.card["arch"] == "user_net.py:ResBNNet" and clf.card["network"]["kind"] == "python"


@pytest.mark.parametrize("name", ["exported", "exported_b1", "scripted", "traced"])
def test_programs(user_model, reference, name):
    x, ref = reference
    clf = load_model(user_model[name], info={"input_shape": DIGITS})
    torch.testing.assert_close(_logits(clf, x), ref, rtol=1e-5, atol=1e-5)  # batch 1: 6 calls, other rounding
    if name == "exported":
        assert torch.equal(_logits(clf, x), ref)
    assert clf.num_classes == 10


def test_exported_program_gives_its_input_shape_and_switches_modes(user_model):
    clf = load_model(user_model["exported"])
    assert isinstance(clf.module, ExportedModule) and clf.input_shape == (1, 8, 8) and clf.num_classes == 10
    assert clf.module.batch is None and load_model(user_model["exported_b1"]).module.batch == 1
    with clf.attack_mode():  # an exported module refuses .eval(); the wrapper only records the flag
        assert not clf.training
    clf.train()  # the classifier records the mode and leaves the program as it was exported
    assert clf.training and clf.module.training
    clf.eval()
    with pytest.warns(UserWarning, match="runs as it was exported"):  # asked directly, the wrapper says so
        clf.module.train()
    clf.module.eval()
    # its state_dict has the network's own names, so the user's weights load into it
    assert set(clf.module.state_dict()) == set(user_model["net"].state_dict())
    again = load_model(user_model["exported"], weights=user_model["safetensors"])
    assert torch.equal(_logits(again, _x()), _logits(clf, _x()))


def test_gradients_through_every_form_match(user_model):
    x, y = _x(), torch.arange(6)
    grads = []
    for source, weights in (
        (user_model["spec"], user_model["safetensors"]),
        (user_model["exported"], None),
        (user_model["scripted"], None),
    ):
        clf = load_model(source, weights=weights, info={"input_shape": DIGITS})
        xg = x.clone().requires_grad_(True)
        with clf.attack_mode():
            torch.nn.functional.cross_entropy(clf(xg), y).backward()
        grads.append(xg.grad)
    for g in grads[1:]:  # every form runs the same operations on the same weights
        assert torch.equal(g, grads[0])
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(user_model["net"](xg), y).backward()
    # attack mode holds the kernels channels-last on CPU (models.CPU_CHANNELS_LAST): the same up to float rounding
    assert torch.allclose(grads[0], xg.grad, rtol=1e-5, atol=1e-7) and bool(grads[0].abs().sum() > 0)


def test_module_spec_from_the_working_directory(user_model, tmp_path, monkeypatch, reference):
    x, ref = reference
    package = tmp_path / "byom_pkg_for_tests"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(user_model["source"].read_text())
    monkeypatch.chdir(tmp_path)
    side = {"input_shape": DIGITS, "arch_kwargs": {"width": 12}, "dataset": "digits"}
    (tmp_path / "w.advlab.json").write_text(json.dumps(side))
    save_file(user_model["net"].state_dict(), str(tmp_path / "w.safetensors"))
    clf = load_model("byom_pkg_for_tests.nets:make_net", weights=tmp_path / "w.safetensors")
    assert torch.equal(_logits(clf, x), ref)
    assert clf.card["network"] == {"kind": "python", "module": "byom_pkg_for_tests.nets", "name": "make_net"}
    assert clf.card["arch_kwargs"] == {"width": 12} and clf.card["dataset"] == "digits"


def test_data_parallel_prefix_is_removed(user_model, tmp_path, reference):
    x, ref = reference
    state = {f"module.{k}": v for k, v in user_model["net"].state_dict().items()}
    save_file(state, str(tmp_path / "dp.safetensors"))
    clf = load_model(user_model["spec"], weights=tmp_path / "dp.safetensors", info={"input_shape": DIGITS})
    assert torch.equal(_logits(clf, x), ref)


def test_factory_without_weights_warns(user_model):
    with pytest.warns(UserWarning, match="no weights given"):
        load_model(user_model["spec"], info={"input_shape": DIGITS})


# ---------------------------------------------------------------------- what the card says
def test_info_and_sidecar(user_model, tmp_path, reference):
    x, ref = reference
    program = tmp_path / "net.pt2"
    program.write_bytes(user_model["exported"].read_bytes())
    classes = [f"digit {i}" for i in range(10)]
    sidecar = {"mean": [0.5], "std": [0.25], "bounds": [0, 1], "classes": classes, "dataset": "digits"}
    sidecar_path(program).write_text(json.dumps(sidecar))
    assert sidecar_path(program).name == "net.advlab.json"
    clf = load_model(program)
    assert clf.card["classes"] == classes and clf.card["dataset"] == "digits"
    assert clf.card["normalization"] == {"mean": [0.5], "std": [0.25]}
    with torch.no_grad():
        assert torch.equal(_logits(clf, x), user_model["net"]((x - 0.5) / 0.25))
    # given fields win over the sidecar's
    other = load_model(program, info={"mean": [0.0], "std": [1.0], "dataset": "mine"})
    assert torch.equal(_logits(other, x), ref) and other.card["dataset"] == "mine"
    assert read_sidecar(sidecar_path(program)).classes == tuple(classes)


@pytest.mark.parametrize(
    "content,match",
    [
        ({"mena": [0.5]}, r"unknown field 'mena'.*Did you mean 'mean'"),
        ({"num_classes": 1}, "num_classes"),
        ({"bounds": [1, 0]}, "bounds: expected low < high"),
        ({"input_shape": "1x8x8"}, "input_shape"),
        ([1, 2], "expected a JSON object"),
        ({"classes": ["a"], "num_classes": 10}, "classes: expected 10 names"),
    ],
)
def test_bad_sidecar(user_model, tmp_path, content, match):
    side = tmp_path / "side.json"
    side.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match) as info:
        load_model(user_model["exported"], sidecar=side)
    assert str(side) in str(info.value) and "\n" not in str(info.value)


def test_sidecar_not_json(user_model, tmp_path):
    side = tmp_path / "side.json"
    side.write_text("{mean: 0.5")
    with pytest.raises(ValueError, match=f"{side}: not valid JSON"):
        load_model(user_model["exported"], sidecar=side)
    side.write_bytes(b"\x80\x81 not text")
    with pytest.raises(ValueError, match=f"{side} is a binary file.*not UTF-8"):
        load_model(user_model["exported"], sidecar=side)


def test_classes_and_shape_are_checked_against_the_network(user_model):
    with pytest.raises(ValueError, match="num_classes is 7 but the network outputs 10 logits"):
        load_model(user_model["exported"], info={"num_classes": 7})
    with pytest.raises(ValueError, match=r"forward pass on zeros of shape \(2, 3, 32, 32\) failed"):
        load_model(user_model["scripted"], info={"input_shape": [3, 32, 32]})


def test_model_info_merging():
    a = ModelInfo(mean=0.5, std=(0.25,), num_classes=10)
    assert a.mean == (0.5,) and a.given() == ["mean", "std", "num_classes"]
    merged = a.over(ModelInfo(num_classes=5, dataset="digits"))
    assert merged.num_classes == 10 and merged.dataset == "digits"


def test_card_options_with_a_model_folder_are_refused(tmp_path):
    folder = save_model(build_classifier("mlp", (1, 8, 8), 10), tmp_path / "m")
    with pytest.raises(ValueError, match="card.json already says what weights, mean would"):
        load_model(folder, weights=tmp_path / "w.pt", info={"mean": [0.5]})


# ---------------------------------------------------------------------- a whole pickle is never unpickled
class _Payload:
    """Unpickling this object would create the marker file: proof of executed pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_model_is_refused_without_running_it(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save(_Payload(marker), path, _use_new_zipfile_serialization=not legacy)
    for call in (lambda: load_model(path), lambda: load_model("x.py:Net", weights=path)):
        with pytest.raises(ValueError, match="whole pickled model") as info:
            call()
        text = str(info.value)
        assert str(path) in text and "\n" not in text
        assert "state_dict()" in text and "torch.export" in text and "advlab import" in text
    assert not marker.exists()


def test_pickled_user_model_names_its_class(user_model):
    with pytest.raises(ValueError, match=r"whole pickled model \(it pickles user_net_for_tests.ResBNNet\)"):
        load_model(user_model["pickle"])


# ---------------------------------------------------------------------- every unreadable file: one line
def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")


UNREADABLE = [
    ("empty.pt", lambda p: p.write_bytes(b""), "is an empty file"),
    ("random.bin", lambda p: p.write_bytes(bytes(range(256)) * 4), "is a binary file of unknown format"),
    ("archive.pt", _zip, "is a zip archive that is not a TorchScript file, a torch.export program or a torch.save"),
    ("model.onnx", lambda p: p.write_bytes(b"\x08\x07\x12\x07pytorch"), "is an ONNX model.*onnx2torch"),
    ("model.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64)), r"is an HDF5 file \(a Keras/TensorFlow"),
    ("notes.txt", lambda p: p.write_text("hello\n"), "is a text file"),
    ("nets.py", lambda p: p.write_text("import torch\n"), r"name the class or function in it.*nets\.py:Net"),
    ("w.pt", lambda p: torch.save({"w": torch.zeros(2)}, p), "is a torch.save checkpoint; a state_dict"),
    ("w.safetensors", lambda p: save_file({"w": torch.zeros(2)}, str(p)), "weights without the network"),
    ("other.json", lambda p: p.write_text('{"a": 1}'), "not an advlab model card"),
    ("broken.json", lambda p: p.write_text("{oops"), r"not valid JSON \(Expecting property name"),
]


@pytest.mark.parametrize("name,make,match", UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_unreadable_model_file(tmp_path, name, make, match):
    path = tmp_path / name
    make(path)
    with pytest.raises(ValueError, match=match) as info:
        load_model(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text


def test_card_that_is_not_utf8(tmp_path):
    folder = save_model(build_classifier("mlp", (1, 8, 8), 10), tmp_path / "m")
    (folder / "card.json").write_bytes(b"\x80\x02 pickled")
    with pytest.raises(ValueError, match=r"card\.json: not UTF-8 text.*byte 0x80 at 0"):
        load_model(folder)


UNREADABLE_WEIGHTS = [
    ("w.bin", lambda p, m: p.write_bytes(bytes(range(256))), "is a binary file.*expected a safetensors file"),
    (
        "w.pt",
        lambda p, m: torch.save({"epoch": 3, "lr": 0.1}, p),
        r"no state_dict of tensors \(top-level keys: 'epoch'",
    ),
    ("w.pt", lambda p, m: torch.save([torch.zeros(1)], p), "holds a list, not a state_dict"),
    ("w.safetensors", lambda p, m: p.write_bytes(b"\x10" + bytes(7) + b"{" + bytes(20)), "is corrupt"),
    ("net.pt2", lambda p, m: p.write_bytes(m["exported"].read_bytes()), "a whole network: pass it as --model"),
    (
        "w.safetensors",
        lambda p, m: save_file({"head.weight": torch.zeros(10, 48)}, str(p)),
        r"do not match the network \(missing in the file",
    ),
]


@pytest.mark.parametrize("name,make,match", UNREADABLE_WEIGHTS)
def test_unreadable_weights(user_model, tmp_path, name, make, match):
    path = tmp_path / name
    make(path, user_model)
    with pytest.raises(ValueError, match=match) as info:
        load_model(user_model["spec"], weights=path, info={"input_shape": DIGITS})
    text = str(info.value)
    assert str(path) in text and "\n" not in text and text.startswith(("weights: ", str(path)))


@pytest.mark.parametrize(
    "source,make,exc,match",
    [
        ("missing.py:Net", None, FileNotFoundError, "missing.py: no such network file"),
        ("broken.py:Net", "def oops(:\n", ValueError, r"importing broken\.py:Net failed: SyntaxError"),
        ("nets.py:Nett", "class Net:\n    pass\n", ValueError, r"has no 'Nett'.*Did you mean 'Net'"),
        ("nets.py:Net", "class Net:\n    pass\n", TypeError, "returned a Net, expected a torch.nn.Module"),
        ("nets.py:Net", "def Net(width):\n    pass\n", ValueError, r"calling nets\.py:Net\(\*\*\{\}\) failed"),
        ("no_such_pkg_xyz.nets:Net", None, ValueError, "No module named 'no_such_pkg_xyz'"),
        ("nothing_here", None, FileNotFoundError, "no such model folder or file; expected an advlab model folder"),
    ],
)
def test_bad_factories(tmp_path, monkeypatch, source, make, exc, match):
    monkeypatch.chdir(tmp_path)
    if make is not None:
        Path(source.split(":")[0]).write_text(make)
    with pytest.raises(exc, match=match) as info:
        load_model(source)
    assert "\n" not in str(info.value)


def test_sniff(user_model):
    assert sniff(user_model["exported"]) == "exported"
    assert sniff(user_model["scripted"]) == sniff(user_model["traced"]) == "torchscript"
    assert sniff(user_model["state_dict"]) == sniff(user_model["pickle"]) == "torch-save"
    assert sniff(user_model["safetensors"]) == "safetensors" and sniff(user_model["source"]) == "python"


# ---------------------------------------------------------------------- a user's network in a model folder
@pytest.mark.parametrize(
    "network,file", [("spec", "network.py"), ("export", "network.pt2"), ("torchscript", "network.pt")]
)
def test_save_model_with_a_users_network(user_model, tmp_path, reference, network, file):
    x, ref = reference
    clf = Classifier(user_model["net"], input_shape=(1, 8, 8), num_classes=10, card={"dataset": "digits"})
    request = user_model["spec"] if network == "spec" else network
    folder = save_model(clf, tmp_path / "m", network=request, accuracy={"test": 0.97})
    assert sorted(p.name for p in folder.iterdir()) == sorted(["card.json", "model.safetensors", file])
    card = json.loads((folder / "card.json").read_text())
    assert card["format_version"] == 2 and card["network"]["file"] == file and len(card["network"]["sha256"]) == 64
    loaded = load_model(folder)
    assert torch.equal(_logits(loaded, x), ref)
    assert loaded.card["accuracy"] == {"test": 0.97} and Path(loaded.card["network"]["file"]).is_absolute()
    # saved again elsewhere, the network file comes along
    again = save_model(loaded, tmp_path / "copy")
    assert torch.equal(_logits(load_model(again), x), ref)


def test_module_spec_is_recorded_not_copied(user_model, tmp_path, monkeypatch, reference):
    x, ref = reference
    package = tmp_path / "byom_pkg_saved"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(user_model["source"].read_text())
    monkeypatch.chdir(tmp_path)
    clf = Classifier(user_model["net"], input_shape=(1, 8, 8), num_classes=10)
    folder = save_model(clf, tmp_path / "m", network="byom_pkg_saved.nets:make_net", arch_kwargs={"width": 12})
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]
    loaded = load_model(folder)
    assert torch.equal(_logits(loaded, x), ref) and loaded.card["arch_kwargs"] == {"width": 12}


def test_save_model_refuses_what_it_cannot_rebuild(user_model, tmp_path):
    clf = Classifier(user_model["net"], input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match=r"build_classifier.*network='path/to/nets\.py:Net'"):
        save_model(clf, tmp_path / "a")
    with pytest.raises(ValueError, match=r"weights do not match the classifier's \(.*shape mismatch"):
        save_model(clf, tmp_path / "b", network=user_model["spec"], arch_kwargs={"width": 4})
    with pytest.raises(ValueError, match="network: expected 'export', 'torchscript'"):
        save_model(clf, tmp_path / "c", network="pickle")
    with pytest.raises(ValueError, match="input_shape and num_classes are unknown; give them to the classifier"):
        save_model(Classifier(user_model["net"]), tmp_path / "d", network="export")
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_changed_network_file_is_refused(user_model, tmp_path):
    clf = Classifier(user_model["net"], input_shape=(1, 8, 8), num_classes=10)
    folder = save_model(clf, tmp_path / "m", network=user_model["spec"])
    with open(folder / "network.py", "a") as fh:
        fh.write("\nprint('changed')\n")
    with pytest.raises(ValueError, match=r"network\.py: the network file changed since the card was written"):
        load_model(folder)


def test_import_model(user_model, tmp_path, reference):
    x, ref = reference
    folder = import_model(
        user_model["spec"],
        tmp_path / "m",
        weights=user_model["state_dict"],
        info={"input_shape": DIGITS, "mean": [0.0], "std": [1.0], "dataset": "digits"},
    )
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["card.json", "model.safetensors", "network.py"]
    card = json.loads((folder / "card.json").read_text())
    assert card["arch"] == "user_net.py:ResBNNet" and card["input_shape"] == DIGITS and card["num_classes"] == 10
    assert card["dataset"] == "digits" and card["normalization"] == {"mean": [0.0], "std": [1.0]}
    origin = card["extra"]["imported_from"]
    assert origin["weights"] == str(user_model["state_dict"]) and len(origin["weights_sha256"]) == 64
    # weights in safetensors (no pickle in the folder), the same tensors as the user's
    state = load_file(str(folder / "model.safetensors"))
    assert all(torch.equal(state[k], v) for k, v in user_model["net"].state_dict().items())
    assert sniff(folder / "model.safetensors") == "safetensors"
    assert torch.equal(_logits(load_model(folder), x), ref)


def test_import_needs_the_input_shape(user_model, tmp_path):
    with pytest.raises(ValueError, match="input shape is unknown"):
        import_model(user_model["scripted"], tmp_path / "m")
    folder = import_model(user_model["scripted"], tmp_path / "m", info={"input_shape": DIGITS})
    assert (folder / "network.pt").is_file()


def test_import_refuses_a_folder_that_computes_something_else(user_model, tmp_path, monkeypatch):
    import advlab.zoo.imports as imports

    real = imports.load_folder

    def tampered(path):
        clf = real(path)
        with torch.no_grad():
            clf.module.head.bias.add_(1.0)  # what a buffer set outside __init__ would do: the folder differs
            clf.module.head.weight.mul_(2.0)
        return clf

    monkeypatch.setattr(imports, "load_folder", tampered)
    with pytest.raises(ValueError, match="gives other logits than the source"):
        import_model(
            user_model["spec"], tmp_path / "m", weights=user_model["safetensors"], info={"input_shape": DIGITS}
        )
