"""``advlab poison`` end to end on digits, its files, and its refusals of bad input before any training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advlab.cli import main
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
