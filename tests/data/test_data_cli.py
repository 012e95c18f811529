"""``--data FILE`` end to end (issue 14): the commands attack and evaluate the user's npz, image folder and CSV.

Models are built with the zoo, trained in-process for a few full-batch steps and saved as advlab model folders;
the results written by the CLI are checked against a recomputation on the arrays the test wrote.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from advlab import zoo
from advlab.cli import main
from advlab.cli._common import load_split
from advlab.data import load_dataset


def _fit(clf, x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> None:
    opt = torch.optim.Adam(clf.parameters(), lr=0.01)
    clf.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(x), y).backward()
        opt.step()
    clf.eval()


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    train = load_dataset("digits", "train")
    clf = zoo.build_classifier("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    _fit(clf, train.x, train.y)
    return zoo.save_model(clf, tmp_path_factory.mktemp("m") / "digits", dataset="digits")


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", "test", n=60)


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory):
    """The wine data standardised, written as a CSV with a header and the label in a named middle column."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    path = tmp_path_factory.mktemp("csv") / "wine.csv"
    names = [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join(names[:5] + ["cultivar"] + names[5:])]
    lines += [
        ",".join([*(f"{v:.6f}" for v in row[:5]), str(int(c)), *(f"{v:.6f}" for v in row[5:])]) for row, c in zip(x, y)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def wine_model(tmp_path_factory, wine_csv):
    from advlab.data import load_data_file

    data = load_data_file(wine_csv, label_column="cultivar")
    clf = zoo.build_classifier("mlp", input_shape=(13,), num_classes=3, bounds=(-math.inf, math.inf), seed=0)
    _fit(clf, data.x, data.y, steps=15)  # not so long that its softmax saturates (the masking checks would say so)
    return zoo.save_model(clf, tmp_path_factory.mktemp("m") / "wine", dataset="wine")


def _run(args, capsys) -> tuple[int, str]:
    rc = main(args)
    return rc, capsys.readouterr().err


def test_attack_on_an_nhwc_uint8_npz(digits_model, digits_test, tmp_path, capsys):
    pixels = (digits_test.x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()  # NHWC uint8, as users have
    path = tmp_path / "digits_nhwc.npz"
    np.savez(path, x=pixels, y=digits_test.y.numpy())
    base = ["attack", "--model", str(digits_model), "--data", str(path), "--attack", "fgsm", "--eps", "0.1", "--quiet"]
    rc, err = _run([*base, "--layout", "nhwc", "--n", "60", "--out", str(tmp_path / "a")], capsys)
    assert rc == 2 and "digits_nhwc.npz: the inputs are uint8 values 0..255" in err and "--scale 255" in err
    rc, err = _run([*base, "--scale", "255", "--n", "60", "--out", str(tmp_path / "a")], capsys)
    assert rc == 2 and "look channels-last (N, H, W, C); pass --layout nhwc" in err
    rc, err = _run([*base, "--layout", "nhwc", "--scale", "255", "--n", "61", "--out", str(tmp_path / "a")], capsys)
    assert rc == 2 and "--n: asked for 61 examples but" in err and "use --n <= 60" in err
    rc, err = _run([*base, "--layout", "nhwc", "--scale", "255", "--n", "40", "--out", str(tmp_path / "a")], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path / "a" / "result.json").read_text())
    assert res["data"] == {"name": "digits_nhwc.npz", "split": "all", "n": 40, "source": str(path)}
    # independent recomputation of the clean accuracy on the pixels written
    model = zoo.load_model(digits_model)
    x = torch.from_numpy(pixels[:40].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))
    with torch.no_grad():
        clean = float((model(x).argmax(1) == digits_test.y[:40]).double().mean())
    assert res["clean_accuracy"] == pytest.approx(clean)


def test_evaluate_on_an_image_folder(digits_model, digits_test, tmp_path, capsys):
    root = tmp_path / "pngs"
    for c in range(10):
        (root / f"digit{c}").mkdir(parents=True)
    for i, (img, label) in enumerate(zip(digits_test.x, digits_test.y)):
        pixels = (img[0] * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"digit{int(label)}" / f"{i:04d}.png")
    out = tmp_path / "e"
    args = ["evaluate", "--model", str(digits_model), "--data", str(root), "--eps", "0.1", "--attacks", "fgsm"]
    rc, err = _run([*args, "--n", "30", "--no-checks", "--quiet", "--out", str(out)], capsys)
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 30 and report["settings"]["data"] == f"{root} (first 30)"
    # the folder's first 30 examples, round-robin over the classes: three of each digit
    assert sorted(report["examples"]["label"]) == sorted(list(range(10)) * 3)


def test_attack_and_evaluate_a_csv_with_unbounded_features(wine_model, wine_csv, tmp_path, capsys):
    base = ["--model", str(wine_model), "--data", str(wine_csv), "--label-column", "cultivar", "--quiet"]
    rc, err = _run(["attack", *base, "--attack", "pgd", "--norm", "l2", "--eps", "1.0", "--n", "50",
                    "--steps", "10", "--out", str(tmp_path / "a")], capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads((tmp_path / "a" / "result.json").read_text())
    assert res["threat"]["bounds"] == [-math.inf, math.inf] and res["data"]["n"] == 50
    assert res["robust_accuracy"] < res["clean_accuracy"]
    rc, err = _run(["evaluate", *base, "--eps", "0.5,1", "--norm", "l2", "--preset", "fast", "--n", "60",
                    "--out", str(tmp_path / "e")], capsys)  # fmt: skip
    assert rc == 0, err
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["bounds"] == [-math.inf, math.inf]
    assert {c["name"]: c["status"] for c in report["checks"]}["large_eps"] == "pass"
    rc, err = _run(
        ["attack", *base[:4], "--attack", "pgd", "--eps", "1", "--n", "9", "--out", str(tmp_path / "b")], capsys
    )
    assert rc == 2 and "wine.csv: label column 'f12' holds 1.01301, not an integer class index" in err  # the last


def test_data_errors_the_command_line_reports(digits_model, digits_test, tmp_path, capsys):
    base = ["attack", "--model", str(digits_model), "--attack", "fgsm", "--eps", "0.1", "--n", "60"]
    base += ["--out", str(tmp_path / "o")]
    rc, err = _run([*base, "--data", "digits", "--layout", "nhwc"], capsys)
    assert rc == 2 and "--layout: read a data file (--data FILE); digits is a built-in dataset" in err
    np.savez(tmp_path / "raw255.npz", x=digits_test.x.numpy() * 255, y=digits_test.y.numpy())
    rc, err = _run([*base, "--data", str(tmp_path / "raw255.npz")], capsys)
    assert rc == 2 and "raw255.npz lie in [0, 255] but the model takes inputs in (0, 1) (pixels 0..255?)" in err
    np.savez(tmp_path / "flat.npz", x=digits_test.x.reshape(60, -1).numpy(), y=digits_test.y.numpy())
    rc, err = _run([*base, "--data", str(tmp_path / "flat.npz")], capsys)
    assert rc == 2 and "--data: flat.npz inputs have shape (64,) but the model expects (1, 8, 8)" in err
    np.savez(tmp_path / "nhwc.npz", x=digits_test.x.permute(0, 2, 3, 1).numpy()[:, :, :, :1], y=digits_test.y.numpy())
    rc, err = _run([*base, "--data", str(tmp_path / "nhwc.npz"), "--layout", "nchw"], capsys)
    assert rc == 2 and "channels-last images read as channels-first: pass --layout nhwc" in err
    for c in ("a", "b"):  # an image folder with 2 classes for a 10-class model
        (tmp_path / "two" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "two" / c / "0.png")
    rc, err = _run([*base, "--data", str(tmp_path / "two"), "--n", "2"], capsys)
    assert rc == 2 and "--data: two has 2 classes but the model has 10" in err
    rc, err = _run([*base, "--data", str(tmp_path / "missing.npz")], capsys)
    assert rc == 2 and "missing.npz: no such file or folder" in err


def test_a_file_with_one_split_warns_when_a_command_trains_on_it(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 0, 1]))
    files = argparse.Namespace(layout=None, data_scale=None, label_column=None)
    with pytest.warns(UserWarning, match=r"--data .*one.npz holds one split: its examples serve for training and"):
        train = load_split(str(tmp_path / "one.npz"), "train", None, 3, "--n-train", files=files)
    assert len(train) == 3
    np.savez(tmp_path / "two.npz", x_train=np.zeros((4, 3)), y_train=np.zeros(4, int), x_test=np.ones((2, 3)),
             y_test=np.zeros(2, int))  # fmt: skip
    assert float(load_split(str(tmp_path / "two.npz"), "test", None, None, files=files).x.mean()) == 1.0
