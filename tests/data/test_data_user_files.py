"""The user's own data files (issue 14): npz arrays, image folders of PNGs, CSV tables; every error names the file.

Each reader is checked against the arrays the test wrote (an independent oracle: the values put into the file),
including the layout and scale conversions, the split rules and the round-robin order of image folders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.data import DataFileError, is_data_path, load_data_file


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------- npz
def test_npz_with_x_and_y(tmp_path):
    x = _rng().random((7, 3, 4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_data_file(tmp_path / "d.npz")
    assert torch.equal(ds.x, torch.from_numpy(x)) and torch.equal(ds.y, torch.from_numpy(y))
    assert ds.name == "d.npz" and ds.split == "all" and ds.single_split and ds.source == str(tmp_path / "d.npz")
    assert ds.classes == ["0", "1", "2"] and ds.input_shape == (3, 4, 5)
    np.testing.assert_allclose(ds.mean, x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(ds.std, x.std(axis=(0, 2, 3)), rtol=1e-4)
    assert len(load_data_file(tmp_path / "d.npz", "train", n=3)) == 3  # one split serves both


def test_npz_alternative_keys_classes_one_hot_and_whole_float_labels(tmp_path):
    x = _rng(1).random((4, 6)).astype(np.float64)
    onehot = np.eye(3)[[2, 0, 1, 2]]
    np.savez(tmp_path / "a.npz", images=x, labels=onehot, classes=np.array(["cat", "dog", "eel"]))
    ds = load_data_file(tmp_path / "a.npz")
    assert ds.x.dtype == torch.float32 and ds.x.shape == (4, 6)  # feature vectors stay (N, D)
    assert ds.y.tolist() == [2, 0, 1, 2] and ds.classes == ["cat", "dog", "eel"]
    np.savez(tmp_path / "b.npz", x=x, y=np.array([1.0, 0.0, 1.0, 1.0]))
    assert load_data_file(tmp_path / "b.npz").y.dtype == torch.int64


def test_npz_with_both_splits_keras_layout(tmp_path):
    x_train, x_test = _rng(2).random((5, 4, 4)), _rng(3).random((3, 4, 4))
    np.savez(tmp_path / "k.npz", x_train=x_train, y_train=np.arange(5) % 2, x_test=x_test, y_test=np.array([1, 0, 1]))
    train = load_data_file(tmp_path / "k.npz", "train")
    test = load_data_file(tmp_path / "k.npz", "test")
    assert train.split == "train" and test.split == "test" and not test.single_split
    assert train.x.shape == (5, 1, 4, 4)  # (N, H, W) grey images gain their channel axis
    np.testing.assert_array_equal(test.x[:, 0].numpy(), x_test.astype(np.float32))


def test_npz_nhwc_uint8_needs_layout_and_scale(tmp_path):
    pixels = _rng(4).integers(0, 256, size=(6, 5, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", x=pixels, y=np.arange(6) % 3)
    path = tmp_path / "u.npz"
    with pytest.raises(DataFileError, match=r"u.npz: the inputs are uint8 values .*pass --scale 255"):
        load_data_file(path, layout="nhwc")
    with pytest.raises(DataFileError, match=r"u.npz: the images \(6, 5, 7, 3\) look channels-last.*--layout nhwc"):
        load_data_file(path, scale=255)
    ds = load_data_file(path, layout="nhwc", scale=255)
    expected = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.x.numpy(), expected)
    assert ds.input_shape == (3, 5, 7) and float(ds.x.max()) <= 1.0
    assert load_data_file(path, layout="nchw", scale=255).input_shape == (5, 7, 3)  # explicit: taken as said


@pytest.mark.parametrize(
    "arrays,kwargs,match",
    [
        ({"x": np.zeros((3, 2))}, {}, r"bad.npz: no labels under 'y'; expected arrays 'x' and 'y'.*got \['x'\]"),
        ({"inputs_wrong": np.zeros((3, 2)), "y": np.zeros(3)}, {}, r"bad.npz: no inputs under 'x'"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(4, int)}, {}, r"bad.npz: 3 inputs but 4 labels"),
        ({"x": np.zeros((3, 2)), "y": np.array([0.5, 1, 0])}, {}, r"bad.npz: labels y must be integer class indices"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, -1, 0])}, {}, r"bad.npz: labels y must be class indices >= 0"),
        ({"x": np.zeros((3, 2)), "y": np.zeros((3, 2, 2), int)}, {}, r"bad.npz: labels y must be a vector"),
        ({"x": np.zeros((3, 2), np.int64), "y": np.zeros(3, int)}, {}, r"bad.npz: the inputs are int64 .*--scale"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3, int)}, {"layout": "nhwc"}, r"bad.npz: --layout applies to images"),
        ({"x": np.zeros(3), "y": np.zeros(3, int)}, {}, r"bad.npz: expected inputs of shape \(N, D\)"),
        ({"x": np.full((3, 2), np.nan), "y": np.zeros(3, int)}, {}, r"bad.npz: the inputs contain NaN"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3, int)}, {"n": 4}, r"^n: asked for 4 examples but .*bad.npz has 3"),
    ],
)
def test_npz_errors_name_the_file_and_what_was_expected(tmp_path, arrays, kwargs, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        load_data_file(tmp_path / "bad.npz", **kwargs)


def test_npz_that_is_not_one_or_holds_objects(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataFileError, match=r"junk.npz: not a readable .npz file"):
        load_data_file(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.zeros((2, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataFileError, match=r"obj.npz: holds Python objects, which advlab does not unpickle"):
        load_data_file(tmp_path / "obj.npz")
    with pytest.raises(FileNotFoundError, match=r"nothere.npz: no such file or folder"):
        load_data_file(tmp_path / "nothere.npz")
    (tmp_path / "d.txt").write_text("1,2")
    with pytest.raises(DataFileError, match=r"d.txt: unrecognised data file '.txt'; expected an .npz file"):
        load_data_file(tmp_path / "d.txt")


# ---------------------------------------------------------------------- image folders
def _write_pngs(root, per_class: dict[str, list[np.ndarray]]) -> None:
    for name, images in per_class.items():
        (root / name).mkdir(parents=True)
        for i, im in enumerate(images):
            Image.fromarray(im).save(root / name / f"{i:03d}.png")


def test_image_folder_grey_round_robin_and_exact_pixels(tmp_path):
    rng = _rng(5)
    grey = {c: [rng.integers(0, 256, (6, 4), dtype=np.uint8) for _ in range(k)] for c, k in (("b", 2), ("a", 3))}
    _write_pngs(tmp_path / "imgs", grey)
    (tmp_path / "imgs" / "a" / "notes.txt").write_text("ignored")
    ds = load_data_file(tmp_path / "imgs")
    assert ds.classes == ["a", "b"] and ds.input_shape == (1, 6, 4)
    # round-robin over the classes: a0, b0, a1, b1, a2
    assert ds.y.tolist() == [0, 1, 0, 1, 0]
    order = [grey["a"][0], grey["b"][0], grey["a"][1], grey["b"][1], grey["a"][2]]
    expected = np.stack(order)[:, None].astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.x.numpy(), expected)
    assert load_data_file(tmp_path / "imgs", n=2).y.tolist() == [0, 1]  # balanced head
    assert float(load_data_file(tmp_path / "imgs", scale=1).x.max()) > 1.0  # --scale overrides the 255


def test_image_folder_rgb_mixed_with_grey_and_train_test_splits(tmp_path):
    rng = _rng(6)
    rgb = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 5), dtype=np.uint8)
    _write_pngs(tmp_path / "d" / "train", {"cat": [rgb], "dog": [grey]})
    _write_pngs(tmp_path / "d" / "test", {"cat": [grey], "dog": [rgb, rgb]})
    train = load_data_file(tmp_path / "d", "train")
    test = load_data_file(tmp_path / "d", "test")
    assert train.split == "train" and test.split == "test" and not train.single_split
    assert train.input_shape == (3, 5, 5) and len(test) == 3
    np.testing.assert_array_equal(train.x[0].numpy(), rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(train.x[1, 0].numpy(), grey.astype(np.float32) / np.float32(255))  # grey as RGB
    np.testing.assert_array_equal(train.x[1, 1].numpy(), train.x[1, 2].numpy())


def test_image_folder_errors_name_the_folder_and_files(tmp_path):
    rng = _rng(7)
    _write_pngs(tmp_path / "mixed", {"a": [rng.integers(0, 256, (4, 4), dtype=np.uint8)]})
    _write_pngs(tmp_path / "mixed2", {"b": [rng.integers(0, 256, (4, 6), dtype=np.uint8)]})
    (tmp_path / "mixed2" / "b").rename(tmp_path / "mixed" / "b")
    with pytest.raises(
        DataFileError, match=r"mixed: the images have different sizes: a/000.png is 4x4, b/000.png is 6x4"
    ):
        load_data_file(tmp_path / "mixed")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    _write_pngs(tmp_path / "empty", {"b": [rng.integers(0, 256, (4, 4), dtype=np.uint8)]})
    with pytest.raises(DataFileError, match=r"empty: the class folder\(s\) \['a'\] hold no images"):
        load_data_file(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataFileError, match=r"flat: an image folder needs one sub-folder per class"):
        load_data_file(tmp_path / "flat")
    _write_pngs(tmp_path / "broken", {"a": [rng.integers(0, 256, (4, 4), dtype=np.uint8)]})
    (tmp_path / "broken" / "a" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(DataFileError, match=r"zz.png: not a readable image"):
        load_data_file(tmp_path / "broken")
    (tmp_path / "deep" / "a").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 60000, (4, 4), dtype=np.uint16)).save(tmp_path / "deep" / "a" / "x.png")
    with pytest.raises(DataFileError, match=r"x.png: a I;16 image \(16-bit or float\); convert the images to 8-bit"):
        load_data_file(tmp_path / "deep")
    with pytest.raises(DataFileError, match=r"--layout does not apply to an image folder"):
        load_data_file(tmp_path / "empty", layout="nhwc")
    with pytest.raises(ValueError, match=r"^n: asked for 5 examples but .*empty has 1"):
        (tmp_path / "empty" / "a").rmdir()
        load_data_file(tmp_path / "empty", n=5)


# ---------------------------------------------------------------------- CSV
def test_csv_with_header_label_column_by_name_number_and_default(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("f1,label,f2\n0.5,1,-2\n-1.25,0,3e2\n2,2,0\n")
    ds = load_data_file(path, label_column="label")
    np.testing.assert_array_equal(ds.x.numpy(), np.array([[0.5, -2], [-1.25, 300], [2, 0]], dtype=np.float32))
    assert ds.y.tolist() == [1, 0, 2] and ds.input_shape == (2,) and ds.classes == ["0", "1", "2"]
    assert load_data_file(path, label_column="1").y.tolist() == [1, 0, 2]
    assert load_data_file(path, label_column=-2).y.tolist() == [1, 0, 2]
    with pytest.raises(DataFileError, match=r"t.csv: labels \(column 'f2'\) must be class indices >= 0, got -2"):
        load_data_file(path)  # the default label column is the last one, here f2
    path.write_text("0.5,-2,1\n-1,3,0\n")  # no header, label last
    ds = load_data_file(path)
    assert ds.y.tolist() == [1, 0] and ds.x.shape == (2, 2)
    (tmp_path / "t.tsv").write_text("a\tb\tc\n1\t2\t0\n")
    assert load_data_file(tmp_path / "t.tsv").y.tolist() == [0]
    (tmp_path / "semi.csv").write_text("a;b;y\n1.5;2;1\n")
    assert load_data_file(tmp_path / "semi.csv").x.tolist() == [[1.5, 2.0]]


@pytest.mark.parametrize(
    "text,kwargs,match",
    [
        ("a,species\n1,setosa\n", {}, r"t.csv: row 2, column 'species': 'setosa' is not a class index.*map class"),
        ("a,y\n1,0.5\n", {}, r"t.csv: label column 'y' holds 0.5, not an integer class index"),
        ("a,y\n1,-1\n", {}, r"t.csv: labels \(column 'y'\) must be class indices >= 0"),
        ("a,b,y\n1,NA,0\n", {}, r"t.csv: row 2, column 'b': 'NA' is not a number; fill or drop missing values"),
        ("a,b,y\n1,2,0\n1,2\n", {}, r"t.csv: row 3 has 2 columns, the first row 3"),
        ("", {}, r"t.csv: the CSV file is empty"),
        ("a,b,y\n", {}, r"t.csv: the CSV file has a header row but no examples"),
        ("y\n1\n", {}, r"t.csv: expected at least two columns"),
        ("a,y\n1,0\n", {"label_column": "target"}, r"t.csv: no column named 'target' for the labels; its columns"),
        ("1,0\n", {"label_column": "target"}, r"t.csv: no column named 'target'.*no header row: give a number"),
        ("a,y\n1,0\n", {"label_column": 5}, r"t.csv: label column 5 does not exist; the rows have 2 columns"),
        ("a,y\n1,0\n", {"layout": "nchw"}, r"t.csv: --layout applies to images; a CSV file holds feature vectors"),
    ],
)
def test_csv_errors_name_the_file_row_and_column(tmp_path, text, kwargs, match):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DataFileError, match=match):
        load_data_file(tmp_path / "t.csv", **kwargs)


def test_is_data_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_data_path("mnist") and not is_data_path("digits")
    assert is_data_path("x.npz") and is_data_path("sub/folder") and is_data_path("t.CSV")
    (tmp_path / "myimages").mkdir()
    (tmp_path / "mnist").mkdir()
    assert is_data_path("myimages") and not is_data_path("mnist") and is_data_path("./mnist")
