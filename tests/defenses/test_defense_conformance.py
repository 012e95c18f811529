"""The conformance suite every registered defense must pass (STYLE.md: trainers in the scikit-learn manner, checked
like scikit-learn's ``check_estimator``).

Parametrised over ``advlab.defenses.DEFENSES``, so a defense registered later is picked up. (Not named
``test_conformance.py``: the test folders are not packages, so basenames must differ from the attacks' suite.) Each trainer runs with
:data:`COMMON` (2 epochs on 192 digits in batches of 64, a 16-unit MLP) plus its overrides in :data:`FAST`.

The properties:
 1. Settings live in the constructor and are introspectable: ``settings()`` is ``{"defense": name}``, then every
    keyword-only constructor parameter along the MRO but the run options (:data:`RUN_OPTIONS`), then the trainer's
    ``derived_settings()``; each setting is an attribute of the same name; ``cls(**settings)`` gives the same
    settings back (also from the defaults). No setting is named with a synonym of the shared vocabulary.
 2. ``fit`` returns ``self``; ``history_`` has one record per epoch; ``model_`` is left in eval mode.
 3. A bad value of any setting raises ``ValueError``/``TypeError`` naming it; an unknown setting is refused with the
    trainer's settings listed.
 4. A run killed after its first epoch (an exception from ``end_epoch`` of the second) and started again with the
    same checkpoint folder ends with the weights of an uninterrupted run, bit for bit, and the same history.
 5. The model card written by ``zoo.save_model`` records the settings.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from _defense_helpers import digits

from advlab import zoo
from advlab.defenses import DEFENSES
from advlab.defenses.base import CHECKPOINT_FILE
from advlab.settings import SYNONYMS, OneOf, Range

NAMES = DEFENSES.names()

COMMON = dict(epochs=2, batch_size=64, lr=1e-2, seed=1, progress=False)
FAST: dict[str, dict] = {
    "pgd": {"eps": 0.1, "steps": 2},
    "trades": {"eps": 0.1, "steps": 2},
    "fast-fgsm": {"eps": 0.1, "check_size": 32, "check_steps": 2},
    "free": {"m": 2, "epochs": 4},  # a budget of 4 natural epochs: 2 passes
    "goodfellow": {"eps": 0.1},
    "ensemble-adversarial": {"eps": 0.1},  # static_models: a saved model folder, added by make()
    "detector": {"eps": 0.1, "steps": 2, "classifier_epochs": 1, "hidden": 4},
    "distillation": {"temperature": 10.0},
    "ensemble": {"members": 2},
    "denoiser": {"hidden": 8},
    "vat": {"eps": 1.0, "unlabeled_batch_size": 64},
}
"""Per-defense overrides that keep the suite fast; every other setting is the trainer's default."""

RUN_OPTIONS = {"device", "checkpoint_dir", "progress", "eval_batch_size", "overwrite"}
"""Constructor parameters that say how a run is carried out, not what is trained: not recorded in settings()."""

N_TRAIN = 192


class _Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def static_folder(tmp_path_factory):
    """A saved model folder for the static models of ensemble adversarial training."""
    folder = tmp_path_factory.mktemp("static") / "model"
    zoo.save_model(_model("standard", seed=9), folder)
    return str(folder)


@pytest.fixture(scope="module")
def data():
    x, y = digits()
    return {"train": (x[:N_TRAIN], y[:N_TRAIN]), "val": (x[1400:1464], y[1400:1464]), "unlabeled": x[N_TRAIN:320]}


def _model(name: str, seed: int = 0):
    if name == "rbf":
        return zoo.build_classifier("rbf", (1, 8, 8), 10, seed=seed)
    return zoo.build_classifier("mlp", (1, 8, 8), 10, seed=seed, hidden=(16,))


def _settings(name: str, static_folder: str, **extra):
    out = {**COMMON, **FAST.get(name, {}), **extra}
    if name == "ensemble-adversarial":
        out.setdefault("static_models", [static_folder])
    return out


def _fit(name, trainer, data, seed=0):
    kwargs = {"unlabeled": data["unlabeled"]} if trainer.accepts_unlabeled else {}
    return trainer.fit(_model(name, seed), data["train"], data["val"], **kwargs)


def _constructor_parameters(cls) -> list[str]:
    """The keyword-only parameters of every ``__init__`` along the MRO, base classes first (an independent reading)."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        if "__init__" not in vars(klass) or klass is object:
            continue
        for p in inspect.signature(inspect.unwrap(vars(klass)["__init__"])).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names:
                names.append(p.name)
    return names


def _history(trainer):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in trainer.history_]


# ---------------------------------------------------------------------------------------------- 1. settings


@pytest.mark.parametrize("name", NAMES)
def test_settings_are_the_constructor_parameters(name, static_folder):
    cls = DEFENSES.get(name)
    trainer = cls(**_settings(name, static_folder))
    parameters = _constructor_parameters(cls)
    recorded = [p for p in parameters if p not in RUN_OPTIONS]
    settings = trainer.settings()
    assert list(settings) == ["defense", *recorded, *trainer.derived_settings()]
    assert settings["defense"] == name == cls.name
    assert set(cls.declared_settings()) == set(parameters)
    for p in parameters:  # each setting is an attribute of the same name
        assert hasattr(trainer, p), p
    assert json.loads(json.dumps(settings)) == settings  # JSON-friendly as it is
    again = cls(**{k: v for k, v in settings.items() if k in parameters})
    assert again.settings() == settings


@pytest.mark.parametrize("name", NAMES)
def test_defaults_round_trip(name, static_folder):
    cls = DEFENSES.get(name)
    required = {"static_models": [static_folder]} if name == "ensemble-adversarial" else {}
    settings = cls(**required).settings()
    parameters = _constructor_parameters(cls)
    assert cls(**{k: v for k, v in settings.items() if k in parameters}).settings() == settings
    for key, setting in cls.declared_settings().items():
        if key not in required and setting.default is not None:
            assert settings.get(key, setting.default) == json.loads(json.dumps(setting.default)), key


@pytest.mark.parametrize("name", NAMES)
def test_setting_names_follow_the_shared_vocabulary(name):
    for key in DEFENSES.get(name).declared_settings():
        assert key not in SYNONYMS, f"{name}: setting {key!r} should be called {SYNONYMS[key]!r}"
        assert key.isidentifier() and key == key.lower(), key


# ---------------------------------------------------------------------------------------------- 2. fit


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_with_one_record_per_epoch(name, static_folder, data):
    trainer = DEFENSES.get(name)(**_settings(name, static_folder))
    assert _fit(name, trainer, data) is trainer
    assert len(trainer.history_) == trainer.epochs_run
    assert [r["epoch"] for r in trainer.history_] == list(range(1, trainer.epochs_run + 1))
    for record in trainer.history_:
        assert {"train_loss", "train_accuracy", "lr", "seconds"} <= set(record)
        assert math.isfinite(record["train_loss"]) and 0.0 <= record["train_accuracy"] <= 1.0
    assert not trainer.model_.training


# ---------------------------------------------------------------------------------------------- 3. bad settings


def _bad_values(setting) -> list:
    """Values the declared type and constraints of ``setting`` refuse."""
    choice = next((c for c in setting.constraints if isinstance(c, OneOf)), None)
    rng = next((c for c in setting.constraints if isinstance(c, Range)), None)
    if choice is not None:
        return ["no-such-choice"]
    if setting.type is bool:
        return ["yes"]
    if setting.type in (int, float):
        out: list = ["many"]
        if rng is not None and rng.minimum is not None:
            out.append(rng.minimum if rng.strict_min else rng.minimum - 1)
        if rng is not None and rng.maximum is not None:
            out.append(rng.maximum if rng.strict_max else rng.maximum + 1)
        return out
    if any(type(c).__name__ == "Check" for c in setting.constraints):
        return [object()]
    return []  # a free-form value (the device): checked where it is used


@pytest.mark.parametrize("name", NAMES)
def test_bad_setting_raises_naming_it(name, static_folder):
    cls = DEFENSES.get(name)
    good = _settings(name, static_folder)
    checked = 0
    for key, setting in cls.declared_settings().items():
        for bad in _bad_values(setting):
            with pytest.raises((ValueError, TypeError)) as exc:
                cls(**{**good, key: bad})
            assert str(exc.value).startswith(key), (key, bad, str(exc.value))
            checked += 1
    assert checked >= len(cls.declared_settings()) - 1  # every setting but the device


@pytest.mark.parametrize("name", NAMES)
def test_unknown_setting_is_refused_listing_the_settings(name, static_folder):
    cls = DEFENSES.get(name)
    with pytest.raises(TypeError, match="no_such_setting") as exc:
        cls(**_settings(name, static_folder), no_such_setting=1)
    assert "'epochs'" in str(exc.value) or "epochs" in str(exc.value)


# ---------------------------------------------------------------------------------------------- 4. resume


@pytest.mark.parametrize("name", NAMES)
def test_killed_run_resumes_bit_for_bit(name, static_folder, data, tmp_path):
    cls = DEFENSES.get(name)
    full = _fit(name, cls(**_settings(name, static_folder)), data)

    killed = cls(**_settings(name, static_folder, checkpoint_dir=tmp_path))
    end_epoch = killed.end_epoch

    def end_epoch_then_die(model, epoch, record):
        stop = end_epoch(model, epoch, record)
        if epoch == 1:
            raise _Killed  # the second epoch is trained but never checkpointed
        return stop

    killed.end_epoch = end_epoch_then_die
    with pytest.raises(_Killed):
        _fit(name, killed, data)
    assert (tmp_path / CHECKPOINT_FILE).exists()

    resumed = _fit(name, cls(**_settings(name, static_folder, checkpoint_dir=tmp_path)), data, seed=5)  # other init
    assert _history(resumed) == _history(full)
    full_state, resumed_state = full.model_.state_dict(), resumed.model_.state_dict()
    assert list(full_state) == list(resumed_state)
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key


# ---------------------------------------------------------------------------------------------- 5. model card


@pytest.mark.parametrize("name", NAMES)
def test_model_card_records_the_settings(name, static_folder, data, tmp_path):
    trainer = DEFENSES.get(name)(**_settings(name, static_folder))
    clf = _model(name)
    kwargs = {"unlabeled": data["unlabeled"]} if trainer.accepts_unlabeled else {}
    trainer.fit(clf, data["train"], **kwargs)
    folder = zoo.save_model(clf, tmp_path / "model", training={**trainer.settings(), "history": trainer.history_})
    trainer.save_artifacts(folder)
    card = json.loads((folder / "card.json").read_text())
    assert {k: v for k, v in card["training"].items() if k != "history"} == trainer.settings()
    assert len(card["training"]["history"]) == trainer.epochs_run
    assert zoo.load_model(folder).card["training"]["defense"] == name
