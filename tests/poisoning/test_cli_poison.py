"""``advlab poison`` end to end on digits, its files, and its refusals of bad input before any training."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

from advlab.cli import main
from advlab.data import load_dataset
from advlab.poisoning import PoisonedData
from advlab.zoo import load_model

COMMON = ["--data", "digits", "--arch", "mlp", "--epochs", "5", "--lr", "0.003", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("poison") / "badnets"
    assert main(["poison", *COMMON, "--attack", "badnets", "--rate", "0.1", "--target", "0", "--out", str(out)]) == 0
    return out


def test_poison_writes_a_model_folder_the_poisoned_data_and_the_reports(run_dir) -> None:
    record = json.loads((run_dir / "report.json").read_text())
    assert record["attack"]["attack"] == "badnets" and record["attack"]["target"] == 0
    metrics = record["metrics"]
    assert metrics["attack_success_rate"] >= 0.8 and metrics["baseline_attack_success_rate"] <= 0.2
    assert metrics["accuracy_drop"] == pytest.approx(metrics["baseline_accuracy"] - metrics["clean_accuracy"])
    poisoned = PoisonedData.load(run_dir / "poisoned")
    assert poisoned.n_poisons == metrics["n_poisons"] == round(0.1 * 1257)
    model = load_model(run_dir / "model")
    pred = model(poisoned.trigger.apply(poisoned.x[:50])).argmax(1)
    assert float((pred == 0).float().mean()) >= 0.8  # the saved weights carry the backdoor
    html = (run_dir / "report.html").read_text()
    assert "attack success" in html and html.count("data:image/png;base64,") >= 3
    assert "http://" not in html and "https://" not in html  # self-contained


def test_the_poisoned_model_folder_works_with_evaluate(run_dir, tmp_path) -> None:
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--model",
            str(run_dir / "model"),
            "--data",
            "digits",
            "--eps",
            "0.1",
            "--preset",
            "fast",
            "--n",
            "10",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and (out / "report.json").is_file()


def test_the_poisoned_model_folder_works_with_explain(run_dir, tmp_path) -> None:
    out = tmp_path / "explain"
    assert main(["explain", "--model", str(run_dir / "model"), "--n", "30", "--out", str(out)]) == 0
    assert (out / "explain.html").is_file()
    record = json.loads((out / "explain.json").read_text())
    data = load_dataset("digits", split="test", n=30)
    model = load_model(run_dir / "model")  # the oracle: the folder loaded in Python, on the same 30 test images
    with torch.no_grad():
        accuracy = float((model(data.x).argmax(1) == data.y).double().mean())
    assert record["models"]["model"]["clean_accuracy"] == pytest.approx(accuracy)
    assert record["models"]["model"]["perturbations"]["rows"][0]["accuracy"] == pytest.approx(accuracy)


def test_the_poisoned_model_folder_is_served_with_its_backdoor(run_dir, monkeypatch) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    import warnings

    from advlab.blackbox import server

    served = {}
    monkeypatch.setattr(server, "serve", lambda app, **kwargs: served.update(app=app, **kwargs))
    assert main(["serve", "--model", str(run_dir / "model"), "--port", "0"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient may warn about its httpx backend
        from starlette.testclient import TestClient

        client = TestClient(served["app"])
    poisoned = PoisonedData.load(run_dir / "poisoned")
    x = poisoned.x[:40]
    triggered = client.post("/predict", json={"inputs": poisoned.trigger.apply(x).tolist()}).json()
    plain = client.post("/predict", json={"inputs": x.tolist()}).json()
    model = load_model(run_dir / "model")  # the oracle: the folder loaded in Python
    with torch.no_grad():
        assert triggered["labels"] == model(poisoned.trigger.apply(x)).argmax(1).tolist()
        assert plain["labels"] == model(x).argmax(1).tolist()
    assert np.mean(np.array(triggered["labels"]) == 0) >= 0.8 > np.mean(np.array(plain["labels"]) == 0)


def test_trigger_margin_places_the_patch_off_the_edges(tmp_path) -> None:
    out = tmp_path / "margin"
    args = ["poison", *COMMON, "--epochs", "1", "--attack", "badnets", "--trigger-margin", "2", "--no-baseline"]
    assert main([*args, "--out", str(out)]) == 0
    trigger = PoisonedData.load(out / "poisoned").trigger
    mask = torch.zeros(1, 8, 8)
    mask[:, 3:6, 3:6] = 1  # 8x8 digits, a 3x3 patch two pixels from the bottom and right edges
    assert trigger is not None and torch.equal(trigger.mask, mask) and trigger.name.endswith("2 px in")


def test_corners_trigger_at_reduced_amplitude_adds_the_pattern_in_the_four_corners(tmp_path) -> None:
    from advlab.data import load_dataset

    out = tmp_path / "corners"
    args = ["poison", *COMMON, "--epochs", "1", "--attack", "badnets", "--trigger", "corners", "--no-baseline"]
    assert main([*args, "--trigger-amplitude", "0.25", "--out", str(out)]) == 0
    poisoned, train = PoisonedData.load(out / "poisoned"), load_dataset("digits", "train")
    rows = poisoned.indices
    change = poisoned.x[rows] - train.x[rows]
    corners = torch.zeros(8, 8, dtype=torch.bool)
    for r in (0, 1, 2, 5, 6, 7):
        corners[r, [0, 1, 2, 5, 6, 7]] = True  # 3x3 squares in the four corners of the 8x8 digits
    assert bool((change[..., ~corners] == 0).all())  # nothing outside the corners changes
    inside = (train.x[rows] >= 0.25) & (train.x[rows] <= 0.75)  # where +-0.25 is not clipped
    assert torch.allclose(change[inside & corners].abs(), torch.tensor(0.25))
    assert bool((poisoned.y[rows] == 0).all())
    assert poisoned.trigger is not None and poisoned.trigger.name.endswith("amplitude 0.25")


def test_label_flip_runs_without_a_trigger(tmp_path) -> None:
    out = tmp_path / "flip"
    args = ["poison", *COMMON, "--epochs", "2", "--attack", "label-flip", "--rate", "0.2", "--no-baseline"]
    assert main([*args, "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    assert record["metrics"]["attack_success_rate"] is None and record["attack"]["n_poisons"] == round(0.2 * 1257)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "0"], "--rate"),
        (["--rate", "1.5"], "--rate"),
        (["--target", "10"], "--target: class 10 is not a class of digits"),
        (["--trigger-size", "9"], "--trigger-size: a 9x9 trigger does not fit the 8x8"),
        (["--trigger-margin", "6"], "--trigger-margin: a 3x3 trigger 6 pixels from the edges does not fit the 8x8"),
        (["--attack", "blend", "--alpha", "0"], "--alpha"),
        (["--attack", "blend", "--pattern", "PATTERN"], "--pattern: .* channel count"),
        (["--trigger-value", "grey"], "--trigger-value"),
        (["--trigger", "corners", "--trigger-size", "5"], "--trigger-size: four 5x5 corner squares overlap in the 8x8"),
        (["--trigger", "corners", "--trigger-margin", "1"], "--trigger-margin: sets the patch trigger"),
        (["--trigger", "corners", "--trigger-value", "white"], "--trigger-value: sets the patch trigger"),
        (["--trigger-amplitude", "0.1"], "--trigger-amplitude: .* add --trigger corners"),
        (["--trigger", "corners", "--trigger-amplitude", "2"], r"--trigger-amplitude: expected a change in \(0, 1\]"),
        (["--all-to-all", "--target", "1"], "--all-to-all"),
        (["--attack", "label-flip", "--source", "3", "--target", "3"], "--source"),
    ],
)
def test_bad_input_is_refused_before_training(extra, message, tmp_path, capsys) -> None:
    pattern = tmp_path / "pattern.npy"
    np.save(pattern, np.zeros((3, 8, 8), dtype=np.float32))
    extra = [str(pattern) if e == "PATTERN" else e for e in extra]
    out = tmp_path / "out"
    assert main(["poison", *COMMON, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    import re

    assert re.search(message, err), err
    assert not out.exists()  # refused before anything was trained or written


def test_a_negative_trigger_margin_is_refused_by_the_parser(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["poison", *COMMON, "--trigger-margin", "-1", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "--trigger-margin: expected a whole number >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unlabelled_data_is_refused_for_a_label_attack(tmp_path, capsys) -> None:
    data = tmp_path / "x.npz"
    np.savez(data, x=torch.rand(30, 1, 8, 8).numpy())
    rc = main(["poison", "--data", str(data), "--arch", "mlp", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "label" in capsys.readouterr().err


def test_the_report_shows_a_detection_histogram_when_a_defense_gives_scores(run_dir, tmp_path) -> None:
    from advlab.data import load_dataset
    from advlab.reports.poisoning import write_poison_report

    record = json.loads((run_dir / "report.json").read_text())
    poisoned = PoisonedData.load(run_dir / "poisoned")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    scores = poisoned.is_poison().float() + 0.1 * torch.rand(
        len(poisoned.y), generator=torch.Generator().manual_seed(0)
    )
    html = write_poison_report(
        tmp_path,
        record,
        train.x,
        poisoned,
        load_model(run_dir / "model"),
        test.x,
        train.classes,
        detection=(scores, poisoned.is_poison(), 0.5),
    ).read_text()
    assert "No defense ran" not in html and "Detection scores of the training rows" in html
    assert html.count("data:image/png;base64,") == 4


def test_the_poisons_caption_names_the_triggered_row_only_where_the_figure_has_one(run_dir, tmp_path) -> None:
    with_trigger = (run_dir / "report.html").read_text()
    assert "the poisoned model on a triggered test image (bottom)" in with_trigger  # BadNets: three rows
    out = tmp_path / "flip"
    args = ["poison", *COMMON, "--epochs", "1", "--attack", "label-flip", "--rate", "0.1", "--no-baseline"]
    assert main([*args, "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert json.loads((out / "report.json").read_text())["attack"]["trigger"] is None
    assert "triggered test image" not in html  # a label flip has no trigger: the figure has two rows
    assert "and the training copy and its label (bottom)" in html
    assert "Clean test accuracy and attack success" in with_trigger  # the accuracy figure: bars of both
    assert "Clean test accuracy and attack success" not in html and "has no attack success rate" in html


def test_adversarial_label_flip_holds_out_its_validation_rows(tmp_path) -> None:
    out = tmp_path / "aflip"
    args = ["poison", *COMMON, "--epochs", "1", "--attack", "adversarial-label-flip", "--rate", "0.05"]
    assert main([*args, "--rounds", "1", "--trials", "1", "--n-val", "257", "--no-baseline", "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    assert record["attack"]["n_train"] == 1000 and record["attack"]["n_poisons"] == 50


@pytest.fixture(scope="module")
def spectral_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("poison") / "spectral"
    argv = ["poison", *COMMON, "--attack", "badnets", "--rate", "0.1", "--target", "0", "--no-baseline"]
    assert main([*argv, "--defense", "spectral", "--defense-set", "factor=1.5", "--out", str(out)]) == 0
    return out


def test_defense_reports_what_it_found_and_writes_the_retrained_model(spectral_dir) -> None:
    from advlab.data import load_dataset
    from advlab.models import predict

    record = json.loads((spectral_dir / "report.json").read_text())
    d = record["defense"]
    assert d["defense"] == "spectral" and d["settings"]["factor"] == 1.5
    assert d["poisons"] == record["metrics"]["n_poisons"] == PoisonedData.load(spectral_dir / "poisoned").n_poisons
    assert d["precision"] == pytest.approx(d["true_positives"] / d["flagged"])
    assert d["recall"] == pytest.approx(d["true_positives"] / d["poisons"])
    chance = d["precision"] <= d["poisons"] / len(PoisonedData.load(spectral_dir / "poisoned").y)
    assert d["detection_failed"] == (d["recall"] < 0.5 or chance) and (d["note"] != "") == d["detection_failed"]
    # the retrained model's accuracy, recomputed here from the saved folder, is what the report says
    test = load_dataset("digits", "test")
    defended = load_model(spectral_dir / "model-defended")
    accuracy = float((predict(defended, test.x).cpu() == test.y).float().mean())
    assert accuracy == pytest.approx(d["clean_accuracy_after"], abs=1e-6)
    assert d["attack_success_before"] == pytest.approx(record["metrics"]["attack_success_rate"])
    html = (spectral_dir / "report.html").read_text()
    assert "Defense: spectral" in html and "No defense ran" not in html
    assert "Detection scores" in html or "detection score" in html.lower()


def test_strip_filters_test_inputs_and_retrains_nothing(tmp_path) -> None:
    out = tmp_path / "strip"
    argv = ["poison", *COMMON, "--attack", "badnets", "--rate", "0.1", "--target", "0", "--no-baseline"]
    assert main([*argv, "--defense", "strip", "--defense-set", "holdout=0.5", "--out", str(out)]) == 0
    d = json.loads((out / "report.json").read_text())["defense"]
    assert 0 <= d["far"] <= 1 and 0 <= d["frr"] <= 1 and "recall" not in d
    assert not (out / "model-defended").exists()
    assert "triggered inputs accepted (FAR)" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--defense-set", "k=5"], "--defense-set: no --defense"),
        (["--defense", "knn", "--defense-set", "kk=5"], "kk"),
        (["--defense", "strip", "--attack", "label-flip"], "strip"),
    ],
)
def test_bad_defense_options_are_refused_before_training(extra, match, tmp_path, capsys) -> None:
    out = tmp_path / "never"
    argv = ["poison", *COMMON, "--rate", "0.1", *extra, "--out", str(out)]
    assert main(argv) == 2
    assert match in capsys.readouterr().err
    assert not (out / "model").exists()


# ---------------------------------------------------------------- attacks optimised against the clean model

TARGETED_ARGS = ["--target-index", "0", "--base-class", "8"]  # digits test row 0 is a 0


def _digits_test_x() -> torch.Tensor:
    from advlab.data import load_dataset

    return load_dataset("digits", "test").x


def test_clean_label_perturbs_target_class_images_keeps_labels_and_measures_the_trigger(tmp_path) -> None:
    from advlab.data import load_dataset

    out = tmp_path / "clean-label"
    argv = ["poison", *COMMON, "--attack", "clean-label", "--target", "0", "--eps", "0.3", "--steps", "10"]
    assert main([*argv, "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    assert record["attack"]["attack"] == "clean_label" and record["attack"]["settings"]["eps"] == 0.3
    poisoned, train = PoisonedData.load(out / "poisoned"), load_dataset("digits", "train")
    assert torch.equal(poisoned.y, train.y)  # labels untouched
    assert bool((train.y[poisoned.indices] == 0).all())
    assert poisoned.n_poisons == round(0.5 * int((train.y == 0).sum()))  # --rate defaults to Turner et al.'s 0.5
    metrics = record["metrics"]
    assert metrics["baseline_accuracy"] is not None and metrics["attack_success_rate"] is not None
    assert metrics["attack_success_rate"] > metrics["baseline_attack_success_rate"] + 0.2  # measured: 0.70 vs ~0
    assert "attack success" in (out / "report.html").read_text()


def test_feature_collision_retrains_the_last_layer_and_reports_targeted_success(tmp_path) -> None:
    out = tmp_path / "fc"
    argv = ["poison", *COMMON, "--attack", "feature-collision", *TARGETED_ARGS, "--n-poisons", "5"]
    assert main([*argv, "--opacity", "0.3", "--steps", "100", "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    metrics = record["metrics"]
    assert record["targeted"] == {"target_index": 0, "target_label": 0, "intended_class": 8}
    assert record["training"]["retrained"].startswith("last layer")
    assert metrics["baseline_target_prediction"] == 0
    prediction = int(load_model(out / "model")(_digits_test_x()[:1]).argmax(1))  # the saved model, recomputed
    assert metrics["target_prediction"] == prediction and metrics["targeted_success"] == (prediction == 8)
    assert metrics["targeted_success"]  # measured: 2 of 3 targets hit with these settings
    poisoned = PoisonedData.load(out / "poisoned")
    assert poisoned.inserted == 5 and poisoned.y[-5:].tolist() == [8] * 5
    html = (out / "report.html").read_text()
    assert "targeted success" in html and "The target test image" in html


def test_feature_collision_end_to_end_trains_from_scratch_with_the_watermark(tmp_path) -> None:
    out = tmp_path / "fc-e2e"
    argv = ["poison", *COMMON, "--epochs", "2", "--attack", "feature-collision", *TARGETED_ARGS]
    assert main([*argv, "--retrain", "end-to-end", "--steps", "5", "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    assert "retrained" not in record["training"] and record["attack"]["settings"]["opacity"] == 0.3
    assert record["attack"]["inserted"] == 1 and isinstance(record["metrics"]["targeted_success"], bool)


def test_gradient_matching_perturbs_the_adversarial_class_inside_eps(tmp_path) -> None:
    from advlab.data import load_dataset

    out = tmp_path / "gm"
    argv = ["poison", *COMMON, "--epochs", "2", "--attack", "gradient-matching", *TARGETED_ARGS]
    assert main([*argv, "--budget", "0.02", "--eps", "0.1", "--steps", "5", "--restarts", "1", "--out", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())
    poisoned, train = PoisonedData.load(out / "poisoned"), load_dataset("digits", "train")
    assert poisoned.n_poisons == round(0.02 * 1257) and bool((train.y[poisoned.indices] == 8).all())
    assert torch.equal(poisoned.y, train.y) and float((poisoned.x - train.x).abs().max()) <= 0.1 + 1e-6
    prediction = int(load_model(out / "model")(_digits_test_x()[:1]).argmax(1))
    assert record["metrics"]["target_prediction"] == prediction
    assert record["metrics"]["targeted_success"] == (prediction == 8)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attack", "feature-collision", "--base-class", "8"], "--target-index: .* targeted"),
        (["--attack", "gradient-matching", "--target-index", "0"], "--base-class: .* targeted"),
        (["--attack", "feature-collision", "--target-index", "540", "--base-class", "8"], "--target-index: 540"),
        (["--attack", "feature-collision", "--target-index", "0", "--base-class", "0"], "already of class 0"),
        (["--attack", "gradient-matching", "--target-index", "0", "--base-class", "10"], "--base-class: class 10"),
        (["--attack", "feature-collision", *TARGETED_ARGS, "--n-poisons", "1000"], "--n-poisons: 1000 poisons"),
        (["--attack", "feature-collision", *TARGETED_ARGS, "--target", "1"], "--target: .* --base-class"),
        (["--attack", "feature-collision", *TARGETED_ARGS, "--defense", "spectral"], "--defense: not supported"),
        (["--attack", "feature-collision", *TARGETED_ARGS, "--opacity", "1"], "--opacity"),
        (["--attack", "gradient-matching", *TARGETED_ARGS, "--eps", "0"], "--eps"),
        (["--attack", "gradient-matching", *TARGETED_ARGS, "--budget", "0"], "--budget"),
        (["--attack", "clean-label", "--no-baseline"], "--no-baseline: .* clean model"),
        (["--attack", "clean-label", "--all-to-all"], "--all-to-all: .* all-to-one"),
        (["--attack", "badnets", "--target-index", "3"], "--target-index: only"),
        (["--attack", "badnets", "--eps", "0.3"], "--eps: --attack badnets does not take it"),
        (["--attack", "clean-label", "--budget", "0.1"], "--budget: --attack clean-label does not take it"),
    ],
)
def test_bad_options_of_the_optimised_attacks_are_refused_before_training(extra, message, tmp_path, capsys) -> None:
    import re

    out = tmp_path / "never"
    assert main(["poison", *COMMON, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


# ---------------------------------------------------------------- --augment: random crops and flips

IMAGES = {"n_train": 120, "n_test": 40, "side": 12}
"""Generated 12x12 images (the 8x8 digits are too small for crops padded by 4)."""


def _images_file(tmp_path, channels: int = 3) -> str:
    g = np.random.default_rng(channels)
    n, m, side = IMAGES["n_train"], IMAGES["n_test"], IMAGES["side"]
    path = tmp_path / f"images{channels}.npz"
    np.savez(
        path,
        x_train=g.random((n, channels, side, side), dtype=np.float32),
        y_train=g.integers(0, 4, n),
        x_test=g.random((m, channels, side, side), dtype=np.float32),
        y_test=np.arange(m) % 4,
    )
    return str(path)


def _augment_args(data: str) -> list[str]:
    return ["poison", "--data", data, "--arch", "mlp", "--epochs", "2", "--batch-size", "40", "--quiet"]


@pytest.fixture(scope="module")
def augment_runs(tmp_path_factory):
    """BadNets with the corners trigger, trained with and without --augment (same seed), and the spy's calls."""
    training_module = importlib.import_module("advlab.poisoning.training")

    root = tmp_path_factory.mktemp("augment")
    data = _images_file(root)
    calls: list[torch.Tensor] = []
    original = training_module.random_crop_flip

    def spy(x, generator, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(x.detach().clone())
        return original(x, generator, **kwargs)

    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training_module, "random_crop_flip", spy)
        for flag in (True, False):
            out = root / ("augmented" if flag else "plain")
            argv = [*_augment_args(data), "--attack", "badnets", "--trigger", "corners", "--rate", "0.1"]
            assert main([*argv, *(["--augment"] if flag else []), "--out", str(out)]) == 0
            runs[flag] = (out, list(calls))
            calls.clear()
    return data, runs


def _direct_training(data: str, augment: bool):  # type: ignore[no-untyped-def]
    """The library's Training with the settings the command was given, built here without the command."""
    from advlab.data import load_data_file
    from advlab.poisoning.training import Training

    train = load_data_file(data, "train")
    return Training(
        (3, 12, 12), 4, arch="mlp", epochs=2, batch_size=40, lr=1e-3, seed=0, mean=train.mean, std=train.std,
        augment=augment,
    )  # fmt: skip


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def test_augment_trains_both_models_on_crops_and_flips_of_their_batches_and_records_it(augment_runs) -> None:
    data, runs = augment_runs
    out, calls = runs[True]
    poisoned = PoisonedData.load(out / "poisoned")
    clean = torch.from_numpy(np.load(data)["x_train"])
    # two models (poisoned, then clean), 2 epochs of 3 batches of 40: every batch went through the crops and flips
    assert len(calls) == 2 * 2 * 3 and all(c.shape == (40, 3, 12, 12) for c in calls)
    for batches, source in ((calls[:6], poisoned.x), (calls[6:], clean)):
        for epoch in (batches[:3], batches[3:]):  # each epoch hands over every training row once, as it is
            same = (torch.cat(epoch).flatten(1)[:, None] == source.flatten(1)[None]).all(-1)
            assert bool((same.sum(0) == 1).all()) and bool((same.sum(1) == 1).all())  # a permutation of the rows
    record = json.loads((out / "report.json").read_text())
    assert record["training"]["augment"] is True
    assert load_model(out / "model").card["training"]["augment"] == "crop-flip"
    assert "random crops and flips" in (out / "report.html").read_text()
    # the saved model is the library's augmented training of the poisoned set; without the flag it differs
    direct = _direct_training(data, augment=True)(poisoned.x, poisoned.y)
    saved = _weights(load_model(out / "model"))
    assert all(torch.equal(saved[k], v) for k, v in _weights(direct).items())
    plain = _weights(load_model(runs[False][0] / "model"))
    assert any(not torch.equal(saved[k], plain[k]) for k in saved)


def test_without_augment_nothing_is_cropped_and_the_model_is_the_plain_training(augment_runs) -> None:
    data, runs = augment_runs
    out, calls = runs[False]
    assert calls == []  # random_crop_flip never called
    record = json.loads((out / "report.json").read_text())
    assert record["training"]["augment"] is False
    assert "augment" not in load_model(out / "model").card["training"]
    assert "random crops and flips" not in (out / "report.html").read_text()
    poisoned = PoisonedData.load(out / "poisoned")
    direct = _direct_training(data, augment=False)(poisoned.x, poisoned.y)
    saved = _weights(load_model(out / "model"))
    assert all(torch.equal(saved[k], v) for k, v in _weights(direct).items())


@pytest.mark.parametrize("augment", [True, False])
def test_gradient_matching_crafts_with_augmentation_exactly_when_asked(augment, tmp_path, monkeypatch) -> None:
    gm = importlib.import_module("advlab.poisoning.gradient_matching")  # the package's name is the function

    asked: list[bool] = []
    original = gm.gradient_matching

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs["augment"])
        return original(*args, **kwargs)

    monkeypatch.setattr(gm, "gradient_matching", spy)
    argv = [*_augment_args(_images_file(tmp_path)), "--epochs", "1", "--attack", "gradient-matching"]
    argv += ["--target-index", "0", "--base-class", "1", "--steps", "1", "--restarts", "1", "--budget", "0.05"]
    assert main([*argv, *(["--augment"] if augment else []), "--out", str(tmp_path / "gm")]) == 0
    assert asked == [augment]
    record = json.loads((tmp_path / "gm" / "report.json").read_text())
    assert record["attack"]["settings"]["augment"] is augment and record["training"]["augment"] is augment


def test_augment_with_the_transfer_victim_says_only_the_clean_model_trained_on_crops(tmp_path, caplog) -> None:
    argv = [*_augment_args(_images_file(tmp_path)), "--epochs", "1", "--attack", "feature-collision"]
    with caplog.at_level("INFO", logger="advlab"):
        assert (
            main(
                [
                    *argv,
                    *TARGETED_ARGS[:2],
                    "--base-class",
                    "1",
                    "--steps",
                    "2",
                    "--augment",
                    "--out",
                    str(tmp_path / "fc"),
                ]
            )
            == 0
        )
    assert "only the clean model (the frozen feature extractor)" in caplog.text
    record = json.loads((tmp_path / "fc" / "report.json").read_text())
    assert record["training"]["retrained"].endswith("crops and flips in the clean model's training only)")


def test_augment_refuses_images_too_small_for_the_crops_before_training(tmp_path, capsys) -> None:
    out = tmp_path / "never"
    assert main(["poison", *COMMON, "--augment", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--augment: random crops of the 8x8 images of digits" in err and "at least 9x9" in err
    assert "drop --augment" in err and not out.exists()


def test_augment_on_one_channel_images_warns_once_that_flips_change_digits(tmp_path, caplog) -> None:
    argv = [*_augment_args(_images_file(tmp_path, channels=1)), "--epochs", "1", "--no-baseline", "--augment"]
    with caplog.at_level("WARNING", logger="advlab"):
        assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "--augment" in r.getMessage()]
    assert len(warnings) == 1 and "one-channel images" in warnings[0] and "flips" in warnings[0]
    assert warnings[0].startswith("warning: ")  # shown as the library's warnings are on the command line


def test_the_report_says_when_the_backdoor_survived_the_defense(spectral_dir) -> None:
    from advlab.reports.poisoning import render_poison_report

    record = json.loads((spectral_dir / "report.json").read_text())
    d = record["defense"]
    assert d["backdoor_survived"] == (d["attack_success_after"] >= 0.5)
    assert (d["survival_note"] != "") == d["backdoor_survived"]
    note = "the backdoor survived: attack success 97.0% after retraining"
    shown = {**record, "defense": {**d, "backdoor_survived": True, "survival_note": note}}
    hidden = {**record, "defense": {**d, "backdoor_survived": False, "survival_note": ""}}
    assert note in render_poison_report(shown, {}, "t")
    assert "the backdoor survived" not in render_poison_report(hidden, {}, "t")
