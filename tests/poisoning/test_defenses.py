"""The poisoning defenses find the poisons they are built for: spectral signatures, activation clustering, kNN, STRIP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.data import load_dataset
from advlab.models import Classifier
from advlab.poisoning import (
    DEFENSES,
    Detection,
    PoisonedData,
    Trigger,
    activation_clustering,
    knn_sanitise,
    penultimate_features,
    run_defense,
    spectral_signatures,
    stamp,
    strip_threshold,
)
from advlab.poisoning.base import choose, generator_of
from advlab.poisoning.spectral import spectral_scores
from advlab.zoo.cnn import WongCNN

TARGET, SOURCE = 0, 7


def train(x: torch.Tensor, y: torch.Tensor, steps: int = 100) -> nn.Module:
    """A small MLP, full-batch Adam: a backdoor on 8x8 digits is learned in a fraction of a second."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    return train_set.x, train_set.y, test_set.x, test_set.y


@pytest.fixture(scope="module")
def source_backdoor(digits) -> tuple[PoisonedData, nn.Module]:
    """Tran et al.'s setting: triggered images of one source class relabelled to the target (4% of the data)."""
    x, y, _, _ = digits
    rows = choose(50, (y == SOURCE).nonzero().flatten(), generator_of(0))
    poisoned = stamp(x, y, rows, Trigger.patch((1, 8, 8), size=3), TARGET, attack="badnets", target=TARGET)
    return poisoned, train(poisoned.x, poisoned.y)


@pytest.fixture(scope="module")
def badnets(digits) -> tuple[PoisonedData, nn.Module]:
    """All-to-one BadNets: 10% of the rows, drawn from every other class, triggered and relabelled to the target."""
    x, y, _, _ = digits
    rows = choose(125, (y != TARGET).nonzero().flatten(), generator_of(1))
    poisoned = stamp(x, y, rows, Trigger.patch((1, 8, 8), size=2), TARGET, attack="badnets", target=TARGET)
    return poisoned, train(poisoned.x, poisoned.y)


def test_spectral_signatures_find_most_poisons_and_rank_them_first_in_the_target_class(source_backdoor) -> None:
    poisoned, model = source_backdoor
    features = penultimate_features(model, poisoned.x)
    share = poisoned.n_poisons / int((poisoned.y == TARGET).sum())
    result = spectral_signatures(features, poisoned.y, expected_rate=share)
    detection = Detection(result.flagged, poisoned.indices, poisoned.x.shape[0])
    assert detection.recall >= 0.8
    in_target = (poisoned.y == TARGET).nonzero().flatten()
    top = in_target[result.scores[in_target].argsort(descending=True)[: poisoned.n_poisons]]
    assert torch.isin(top, poisoned.indices).float().mean() >= 0.8  # chance: the poisons' share, 0.29
    sizes = torch.bincount(poisoned.y)
    expected = {c: int(torch.ceil(torch.tensor(1.5 * share * int(n))).item()) for c, n in enumerate(sizes)}
    assert result.removed_per_class == pytest.approx(expected, abs=1)


def test_spectral_score_is_the_squared_projection_on_the_top_singular_vector() -> None:
    g = torch.Generator().manual_seed(0)
    r = torch.randn(40, 5, generator=g) * torch.tensor([5.0, 1.0, 1.0, 0.5, 0.1])
    centred = r.double() - r.double().mean(0)
    v = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]  # independent: the covariance's top eigenvector
    assert torch.allclose(spectral_scores(r).double(), (centred @ v) ** 2, rtol=1e-4, atol=1e-6)


def test_activation_clustering_flags_the_small_cluster_of_the_target_class(source_backdoor) -> None:
    poisoned, model = source_backdoor
    result = activation_clustering(penultimate_features(model, poisoned.x), poisoned.y)
    detection = Detection(result.flagged, poisoned.indices, poisoned.x.shape[0])
    assert detection.recall >= 0.8
    assert detection.precision >= 0.3  # chance: 50 poisons in 1257 rows, 0.04
    target = next(c for c in result.classes if c.label == TARGET)
    assert target.poisoned and target.small_share <= 0.35


def test_knn_sanitiser_finds_and_corrects_random_label_flips_on_separable_data() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 2, generator=g)
    flipped = choose(30, torch.arange(300), g)
    y_bad = y.clone()
    y_bad[flipped] = (y[flipped] + 1 + torch.randint(0, 2, (30,), generator=g)) % 3
    result = knn_sanitise(x, y_bad, k=10, eta=0.5)
    detection = Detection(result.flagged, flipped, 300)
    assert detection.recall >= 0.9 and detection.precision >= 0.9
    assert (result.y[flipped] == y[flipped]).float().mean() >= 0.9
    removed = knn_sanitise(x, y_bad, action="remove")
    assert torch.equal(removed.y, y_bad) and torch.equal(removed.flagged, result.flagged)


def test_strip_separates_triggered_from_clean_inputs_on_a_backdoored_model(badnets, digits) -> None:
    poisoned, model = badnets
    _, _, x_test, y_test = digits
    outcome = run_defense("strip", model, poisoned, x_test=x_test, y_test=y_test, n_overlays=20)
    summary = outcome.summary()
    assert summary["attack_success_before"] >= 0.9
    assert summary["far"] <= 0.1 and summary["frr"] <= 0.1
    assert summary["attack_success_through"] <= 0.1 and not summary["detection_failed"]
    clean, triggered = outcome.scores[~outcome.scored_poisons], outcome.scores[outcome.scored_poisons]
    assert triggered.mean() < clean.mean() / 3  # the trigger dominates every blend


def test_strip_threshold_is_the_normal_quantile_of_the_clean_entropies() -> None:
    entropy = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, std = 2.5, float(entropy.std())
    assert strip_threshold(entropy, frr=0.01) == pytest.approx(mean - 2.3263478740408408 * std)


def test_run_defense_removes_retrains_and_reports(source_backdoor, digits) -> None:
    poisoned, model = source_backdoor
    _, _, x_test, y_test = digits
    outcome = run_defense("activations", model, poisoned, retrain=train, x_test=x_test, y_test=y_test)
    summary = outcome.summary()
    assert summary["attack_success_before"] >= 0.5  # all classes triggered; the backdoor was taught on one
    assert summary["attack_success_after"] <= 0.15 and summary["clean_accuracy_after"] >= 0.9
    assert summary["recall"] >= 0.8 and not summary["detection_failed"] and summary["note"] == ""
    assert outcome.scores.shape == (poisoned.x.shape[0],) and torch.equal(outcome.scored_poisons, poisoned.is_poison())
    assert summary["settings"]["reduction"] == "ica"


def test_a_failed_detection_says_so(source_backdoor, digits) -> None:
    poisoned, model = source_backdoor
    _, _, x_test, y_test = digits
    outcome = run_defense("spectral", model, poisoned, x_test=x_test, y_test=y_test, remove=1)
    summary = outcome.summary()
    assert summary["detection_failed"] and "recall" in summary["note"] and "BackdoorBench" in summary["note"]
    assert outcome.model_after is None and summary["attack_success_after"] is None


def test_features_are_the_input_of_the_last_linear_layer_through_classifier_and_zoo_models() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).train()
    clf = Classifier(net, mean=[0.5], std=[0.25], input_shape=(1, 8, 8))
    x = torch.rand(7, 1, 8, 8)
    expected = torch.relu(net[1](((x - 0.5) / 0.25).flatten(1)))
    assert torch.allclose(penultimate_features(clf, x, batch_size=3), expected, atol=1e-6)
    assert net.training  # modes restored
    assert penultimate_features(WongCNN((1, 28, 28), 10), torch.rand(2, 1, 28, 28)).shape == (2, 100)


def test_bad_input_is_refused_naming_the_option(source_backdoor, digits) -> None:
    poisoned, model = source_backdoor
    _, _, x_test, y_test = digits
    with pytest.raises(ValueError, match="unknown 'spectrl'.*Did you mean 'spectral'"):
        run_defense("spectrl", model, poisoned, x_test=x_test, y_test=y_test)
    with pytest.raises(ValueError, match="remove: asks to remove 999 rows"):
        run_defense("spectral", model, poisoned, x_test=x_test, y_test=y_test, remove=999)
    with pytest.raises(ValueError, match="expected_rate"):
        spectral_signatures(torch.rand(10, 3), torch.zeros(10, dtype=torch.long), expected_rate=0.9)
    two_labels = torch.arange(10) % 2
    with pytest.raises(ValueError, match="remove: removes every one of the 10 rows"):
        spectral_signatures(torch.rand(10, 3), two_labels, remove=5)
    with pytest.raises(ValueError, match="expected_rate: removes every one of the 10 rows.*below 1 or factor"):
        spectral_signatures(torch.rand(10, 3), two_labels, expected_rate=0.9, factor=1.0)
    assert spectral_signatures(torch.rand(10, 3), two_labels, remove=4).flagged.numel() == 8
    with pytest.raises(TypeError, match="no setting 'k_neighbours'"):
        run_defense("knn", model, poisoned, x_test=x_test, y_test=y_test, k_neighbours=5)
    with pytest.raises(ValueError, match="eta"):
        run_defense("knn", model, poisoned, x_test=x_test, y_test=y_test, eta=0.0)
    with pytest.raises(ValueError, match="k: asks for 20 neighbours"):
        knn_sanitise(torch.rand(10, 2), torch.zeros(10, dtype=torch.long), k=20)
    with pytest.raises(ValueError, match="model: .*no nn.Linear"):
        penultimate_features(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), torch.rand(2, 1, 8, 8))
    flipped = PoisonedData(poisoned.x, poisoned.y, poisoned.indices, poisoned.original_labels, attack="label_flip")
    with pytest.raises(ValueError, match="'strip' needs a backdoor trigger"):
        run_defense("strip", model, flipped, x_test=x_test, y_test=y_test)
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        knn_sanitise(torch.rand(10, 2), torch.zeros(10, dtype=torch.long), k=0)
    with pytest.raises(ValueError, match="reduction"):
        activation_clustering(torch.rand(10, 3), torch.zeros(10, dtype=torch.long), reduction="tsne")
    assert set(DEFENSES) == {"spectral", "activations", "knn", "strip"}


def test_run_defense_knn_relabels_flipped_labels_and_the_retrained_model_recovers(digits) -> None:
    x, y, x_test, y_test = digits
    rows = choose(250, torch.arange(y.shape[0]), generator_of(2))
    y_bad = y.clone()
    y_bad[rows] = (y[rows] + 3) % 10  # a systematic flip: a model trained on it learns the wrong map
    flipped = PoisonedData(x, y_bad, rows, y[rows], attack="label_flip")
    poisoned_model = train(x, y_bad)
    outcome = run_defense("knn", poisoned_model, flipped, retrain=train, x_test=x_test, y_test=y_test, k=5)
    summary = outcome.summary()
    assert summary["recall"] >= 0.9 and summary["precision"] >= 0.7  # chance: 0.2
    assert summary["attack_success_before"] is None  # no trigger: no attack success to measure
    assert summary["clean_accuracy_after"] >= summary["clean_accuracy_before"] + 0.05
    assert summary["settings"] == {"k": 5, "eta": 0.5, "action": "relabel", "space": "inputs"}


def test_strip_takes_the_bounds_of_a_classifier(badnets, digits) -> None:
    poisoned, model = badnets
    _, _, x_test, y_test = digits
    clf = Classifier(model, bounds=(0.0, 2.0), input_shape=(1, 8, 8))
    outcome = run_defense("strip", clf, poisoned, x_test=x_test, y_test=y_test, n_overlays=5)
    assert outcome.settings["bounds"] == (0.0, 2.0)


def test_flagging_every_row_is_reported_as_a_failed_detection() -> None:
    """Recall 1.0 by flagging everything is chance-level precision: the outcome must say detection failed."""
    from advlab.poisoning.base import Detection
    from advlab.poisoning.defend import DefenseOutcome, failure_note

    n, poisons = 60, torch.arange(0, 60, 6)
    everything = DefenseOutcome(
        "spectral", Detection(torch.arange(n), poisons, n), torch.zeros(n), torch.zeros(n), None, {}
    )
    assert everything.detection.recall == 1.0 and everything.failed and "random" in failure_note(everything)
    exact = DefenseOutcome("spectral", Detection(poisons, poisons, n), torch.zeros(n), torch.zeros(n), None, {})
    assert not exact.failed


def test_a_backdoor_that_survives_the_retraining_is_reported_whatever_the_detection_found() -> None:
    """Recall 0.9 is a detection that worked; the nine poisons of 100 left in still carry the backdoor here."""
    from advlab.poisoning.base import Detection
    from advlab.poisoning.defend import SURVIVED_SUCCESS, DefenseOutcome

    n, poisons = 1000, torch.arange(0, 100)
    found = Detection(torch.arange(0, 91), poisons, n)  # 91 of 100 poisons flagged, nothing else
    metrics = {"clean_accuracy_before": 0.5, "clean_accuracy_after": 0.45, "attack_success_before": 1.0}
    survived = DefenseOutcome(
        "spectral", found, torch.zeros(n), torch.zeros(n), None, {**metrics, "attack_success_after": 0.97}
    )
    summary = survived.summary()
    assert not summary["detection_failed"] and summary["backdoor_survived"]
    assert summary["survival_note"] == (
        "the backdoor survived: attack success 97.0% after retraining without the 91 flagged rows (9 of 100 poisons "
        "left in), 100.0% before; clean accuracy 50.0% before, 45.0% after"
    )
    removed = DefenseOutcome(
        "spectral", found, torch.zeros(n), torch.zeros(n), None, {**metrics, "attack_success_after": 0.02}
    )
    assert not removed.summary()["backdoor_survived"] and removed.summary()["survival_note"] == ""
    edge = {**metrics, "attack_success_after": SURVIVED_SUCCESS}
    assert DefenseOutcome("spectral", found, torch.zeros(n), torch.zeros(n), None, edge).backdoor_survived
    no_trigger = {**metrics, "attack_success_before": None, "attack_success_after": None}  # a label flip
    assert not DefenseOutcome("knn", found, torch.zeros(n), torch.zeros(n), None, no_trigger).backdoor_survived
