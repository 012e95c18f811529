"""Every registered defense trains through ``advlab train`` and records itself in the model card; PGD training
beats standard training under PGD at the training eps; bad settings fail with the setting's name."""

from __future__ import annotations

import json

import pytest
from _defense_helpers import digits, mlp

from advlab.attacks import pgd
from advlab.cli import main
from advlab.defenses import DEFENSES, PGDTraining, StandardTraining
from advlab.threat import ThreatModel

EXTRA = {
    "ensemble-adversarial": None,  # needs a static model folder: filled in by the test
    "detector": ["--set", "classifier_epochs=0", "--set", "steps=2"],
    "pgd": ["--set", "steps=2"],
    "trades": ["--set", "steps=2"],
    "free": ["--set", "m=2"],
    "distillation": ["--set", "temperature=10"],
    "ensemble": ["--set", "members=2"],
}
ARTIFACTS = {"denoiser": "denoiser.safetensors", "detector": "detector.safetensors", "ensemble": "member-1/card.json"}


def _train(out, defense, extra=(), arch="mlp", epochs="1"):
    return main(
        [
            "train",
            "--data",
            "digits",
            "--arch",
            "rbf" if defense == "rbf" else arch,
            "--defense",
            defense,
            "--epochs",
            epochs,
            "--n-train",
            "300",
            "--quiet",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_every_defense_trains_from_the_cli(tmp_path):
    assert _train(tmp_path / "static", "standard", epochs="1") == 0
    for name in DEFENSES.names():
        extra = EXTRA.get(name) or []
        if name == "ensemble-adversarial":
            extra = ["--set", f'static_models=["{tmp_path / "static"}"]', "--set", "eps=0.1"]
        out = tmp_path / name
        assert _train(out, name, extra) == 0, name
        card = json.loads((out / "card.json").read_text())
        assert card["training"]["defense"] == name
        assert len(card["training"]["history"]) >= 1
        if name in ARTIFACTS:
            assert (out / ARTIFACTS[name]).exists(), name


@pytest.mark.parametrize(
    "defense, setting, match",
    [
        ("goodfellow", "alpha=2", "alpha"),
        ("distillation", "temperature=0", "temperature"),
        ("free", "m=0", "m"),
        ("trades", "beta=-1", "beta"),
        ("pgd", "eps=-0.1", "eps"),
        ("fast-fgsm", "nonsense=1", "nonsense"),
    ],
)
def test_bad_settings_from_the_cli(tmp_path, capsys, defense, setting, match):
    assert _train(tmp_path / "bad", defense, ["--set", setting]) != 0
    assert match in capsys.readouterr().err


def test_unknown_defense_from_the_cli(tmp_path, capsys):
    assert _train(tmp_path / "x", "pdg") != 0
    assert "pgd" in capsys.readouterr().err  # did-you-mean


def test_pgd_training_beats_standard_under_pgd_at_training_eps():
    x, y = digits()
    data = (x[:1400], y[:1400])
    settings = dict(epochs=6, lr=1e-2, batch_size=64, progress=False)
    std = StandardTraining(**settings).fit(mlp(), data)
    adv = PGDTraining(eps=0.1, steps=5, **settings).fit(mlp(), data)
    threat = ThreatModel("linf", 0.1)
    xt, yt = x[1400:], y[1400:]
    acc = {
        k: 1 - float(pgd(t.model_, xt, yt, threat, steps=20, generator=0).success.float().mean())
        for k, t in (("standard", std), ("pgd", adv))
    }
    assert acc["pgd"] > acc["standard"] + 0.2, acc


def test_cli_uses_the_defense_schedule_unless_given(tmp_path):
    # fast-fgsm's own default is Wong et al.'s cyclic rate; the CLI must not override it with "constant"
    assert _train(tmp_path / "own", "fast-fgsm", ["--set", "eps=0.1"]) == 0
    own = json.loads((tmp_path / "own" / "card.json").read_text())["training"]
    assert own["schedule"] == "cyclic"
    assert own["history"][0]["lr"] == 0.0  # the cyclic rate starts at 0
    assert _train(tmp_path / "given", "fast-fgsm", ["--set", "eps=0.1", "--schedule", "constant"]) == 0
    given = json.loads((tmp_path / "given" / "card.json").read_text())["training"]
    assert given["schedule"] == "constant" and given["history"][0]["lr"] == given["lr"]
    assert _train(tmp_path / "std", "standard") == 0  # the base trainer's default stays constant
    assert json.loads((tmp_path / "std" / "card.json").read_text())["training"]["schedule"] == "constant"


def test_set_values_are_read_by_the_declared_types(tmp_path, capsys):
    # a fraction for a float, a word for a bool, none for an optional setting
    extra = ["--set", "eps=8/255", "--set", "steps=2", "--set", "step_size=none", "--set", "eps_rampup=0.5"]
    assert _train(tmp_path / "pgd", "pgd", extra) == 0
    training = json.loads((tmp_path / "pgd" / "card.json").read_text())["training"]
    assert training["eps"] == 8 / 255 and training["steps"] == 2 and training["step_size"] == 2.5 * (8 / 255) / 2
    assert _train(tmp_path / "vat", "vat", ["--set", "entmin=yes", "--set", "xi=1e-5"]) == 0
    training = json.loads((tmp_path / "vat" / "card.json").read_text())["training"]
    assert training["entmin"] is True and training["xi"] == 1e-5
    assert _train(tmp_path / "bad", "pgd", ["--set", "steps=2.5"]) != 0
    assert "--set: steps: expected a whole number, got '2.5'" in capsys.readouterr().err


def test_set_refuses_settings_with_their_own_option(tmp_path, capsys):
    assert _train(tmp_path / "o", "pgd", ["--set", "epochs=3"]) != 0
    assert "use --epochs" in capsys.readouterr().err
    assert _train(tmp_path / "o", "pgd", ["--set", "stpes=3"]) != 0
    err = capsys.readouterr().err
    assert "no setting 'stpes'" in err and "Did you mean 'steps'?" in err


def test_list_defenses_shows_every_defense_with_its_settings(capsys):
    assert main(["train", "--list-defenses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert names == DEFENSES.names()
    pgd = lines[lines.index(next(line for line in lines if line.startswith("pgd "))) + 1]
    assert "eps=0.3" in pgd and "steps=10" in pgd and "step_size=None" in pgd and "epochs" not in pgd


def test_overwrite_discards_a_checkpoint_of_another_configuration(tmp_path, capsys):
    assert _train(tmp_path / "o", "standard") == 0
    assert _train(tmp_path / "o", "standard", ["--lr", "0.01"]) != 0
    assert "another configuration" in capsys.readouterr().err
    assert _train(tmp_path / "o", "standard", ["--lr", "0.01", "--overwrite"]) == 0
    assert json.loads((tmp_path / "o" / "card.json").read_text())["training"]["lr"] == 0.01
