"""Papernot et al.'s substitute attack: query counts, Jacobian augmentation, step schedule, budget, transfer."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from advlab import ThreatModel
from advlab.attacks import pgd
from advlab.blackbox import BudgetExceeded, TorchOracle
from advlab.blackbox.substitute import (
    DEFAULT_ATTACK_OPTIONS,
    DEFAULT_SUBSTITUTE,
    PAPER_SETTINGS,
    SubstituteAttack,
    SubstituteSettings,
    default_substitute,
    jacobian_augmentation,
    papernot_blackbox,
    random_targets,
    step_size,
    targeted_augmentation,
)
from advlab.nonneural import from_sklearn

SEED_SIZE = 20
FAST_SETTINGS = {"epochs": 10, "lr": 0.05, "arch_kwargs": {"hidden": (32,)}, **PAPER_SETTINGS}
"""The paper's procedure (Jacobian augmentation, lambda 0.1, tau 3, FGSM) on a small MLP substitute."""
FAST = {**FAST_SETTINGS, "substitute": "mlp"}


@pytest.fixture(scope="module")
def target(digits):
    """The black box: a multinomial logistic regression on digits (fast to fit, ~95% accurate)."""
    xf = digits["x_train"].reshape(len(digits["x_train"]), -1).numpy()
    lr = LogisticRegression(max_iter=300).fit(xf, digits["y_train"].numpy())
    return from_sklearn(lr, input_shape=(1, 8, 8))


def test_step_size_flips_every_tau_rounds():
    assert [step_size(0.1, p, 3) for p in range(7)] == [0.1, 0.1, 0.1, -0.1, -0.1, -0.1, 0.1]
    assert [step_size(0.1, p, None) for p in range(4)] == [0.1] * 4


def test_jacobian_augmentation_on_a_linear_substitute_is_sign_of_the_label_row():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 6, generator=g))
    x = torch.rand(5, 6, generator=g)
    labels = torch.tensor([0, 1, 2, 1, 0])
    new = jacobian_augmentation(lin, x, labels, -0.2, (0.0, 1.0))
    want = (x - 0.2 * lin.weight.detach()[labels].sign()).clamp(0, 1)
    torch.testing.assert_close(new, want)


def test_targeted_augmentation_on_a_linear_substitute_steps_toward_the_target_row():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 6, generator=g))
    x = torch.rand(5, 6, generator=g)
    labels, targets = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([1, 2, 0, 0, 2])
    new = targeted_augmentation(lin, x, labels, targets, 0.3, (0.0, 1.0), steps=3)
    # a linear model's gradient of F_t - F_y is w_t - w_y everywhere: three steps of 0.1 along its sign, clipped
    direction = (lin.weight.detach()[targets] - lin.weight.detach()[labels]).sign()
    want = x
    for _ in range(3):
        want = (want + 0.1 * direction).clamp(0, 1)
    torch.testing.assert_close(new, want)
    assert float((new - x).abs().max()) <= 0.3 + 1e-6
    assert torch.equal(targeted_augmentation(lin, x, labels, targets, 0.3, (0.0, 1.0), steps=3, batch_size=2), new)


def test_random_targets_are_the_other_classes_uniformly():
    labels = torch.arange(10).repeat(500)
    targets = random_targets(labels, 10, torch.Generator().manual_seed(0))
    assert not bool((targets == labels).any())
    assert targets.min() == 0 and targets.max() == 9
    counts = torch.bincount((targets - labels) % 10, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 400  # 5000 draws over 9 shifts: ~556 each


def test_targeted_points_carry_new_labels_and_jacobian_points_do_not(target, digits):
    """The cause of the paper's stall: its new points take their parent's label; targeted ones often do not."""
    x = digits["x_test"][:40]
    changed = {}
    for augmentation, lam in (("jacobian", 0.1), ("targeted", 0.3)):
        oracle = TorchOracle(target, mode="labels")
        res = papernot_blackbox(
            oracle, x, "mlp", rounds=2, **{**FAST_SETTINGS, "augmentation": augmentation, "lam": lam, "tau": None}
        )
        assert res.queries == 40 * 2**2 == oracle.queries
        assert [r.step for r in res.rounds] == [lam, lam, None]
        parent = res.y_train[:80].repeat(2)[: res.y_train.shape[0] - 40]  # S_{p+1} = S_p then one child per point
        changed[augmentation] = float((res.y_train[40:] != parent).float().mean())
    assert changed["targeted"] > changed["jacobian"] + 0.2


def test_default_procedure_over_http_labels_only(target, digits, tmp_path):
    """The defaults (CNN substitute, targeted augmentation, PGD on the margin) end to end through a served oracle."""
    pytest.importorskip("starlette")
    httpx = pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette may warn about its httpx backend on import
        from starlette.testclient import TestClient

    from advlab.blackbox import HTTPOracle
    from advlab.blackbox.server import create_app

    x, y = digits["x_test"], digits["y_test"]
    client = TestClient(create_app(target, mode="labels"))

    def handle(request: httpx.Request) -> httpx.Response:
        answer = client.request(request.method, request.url.path, content=request.content, headers=request.headers)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    oracle = HTTPOracle("http://testserver", transport=httpx.MockTransport(handle), retries=0)
    assert oracle.mode == "labels"
    res = papernot_blackbox(oracle, x[:SEED_SIZE], rounds=2, epochs=3, x_test=x[40:70], y_test=y[40:70])
    queries = oracle.queries
    assert res.settings["substitute"] == DEFAULT_SUBSTITUTE == "auto"
    assert default_substitute((1, 8, 8)) == "wong-cnn" and "Conv2d" in str(res.substitute.module)
    assert res.settings["augmentation"] == "targeted" and res.settings["attack"] == "pgd"
    assert res.settings["attack_options"] == {**DEFAULT_ATTACK_OPTIONS, "step_size": 0.01}
    assert res.queries == SEED_SIZE * 2**2 and res.eval_queries == 30 * (1 + 3) and queries == 80 + 120
    torch.testing.assert_close(res.y_train, target.predict(res.x_train))
    assert torch.equal(res.oracle_fooled, target.predict(res.x_adv) != y[40:70])
    assert float((res.x_adv - x[40:70]).abs().max()) <= 0.3 + 1e-6


def test_query_counts_follow_the_closed_forms(target, digits):
    x = digits["x_test"]
    oracle = TorchOracle(target, mode="labels")
    res = papernot_blackbox(oracle, x[:SEED_SIZE], rounds=3, **FAST)
    # plain augmentation doubles the set: |S_p| = n 2^p, queries n 2^rho
    assert [r.train_size for r in res.rounds] == [SEED_SIZE * 2**p for p in range(4)]
    assert res.queries == SEED_SIZE * 2**3 == oracle.queries
    assert [r.step for r in res.rounds] == [0.1, 0.1, 0.1, None]
    # reservoir sampling from round sigma: n 2^sigma + kappa (rho - sigma)
    oracle = TorchOracle(target, mode="labels")
    res = papernot_blackbox(oracle, x[:SEED_SIZE], rounds=3, sigma=1, kappa=15, **FAST)
    assert res.queries == SEED_SIZE * 2**1 + 15 * (3 - 1) == oracle.queries
    # the labels of the substitute's training set are the oracle's
    torch.testing.assert_close(res.y_train, target.predict(res.x_train))


def test_substitute_learns_the_oracle_and_its_examples_transfer(target, digits):
    x, y = digits["x_test"], digits["y_test"]
    oracle = TorchOracle(target, mode="labels")
    xt, yt = x[40:140], y[40:140]
    res = papernot_blackbox(oracle, x[:40], rounds=3, eps=0.3, x_test=xt, y_test=yt, **FAST)
    clean_err = float((target.predict(xt) != yt).float().mean())
    last = res.rounds[-1]
    assert last.agreement > 0.75
    assert last.agreement > res.rounds[0].agreement + 0.2  # Jacobian augmentation is what teaches it
    assert res.transfer_success == last.transfer_success
    assert res.transfer_success > clean_err + 0.3
    # the reported success is the oracle's own verdict on x_adv
    assert torch.equal(res.oracle_fooled, target.predict(res.x_adv) != yt)
    assert float((res.x_adv - xt).abs().max()) <= 0.3 + 1e-6
    # evaluation queries: test labels once, plus one transfer check per round
    assert res.eval_queries == len(xt) * (1 + len(res.rounds))
    assert oracle.queries == res.queries + res.eval_queries
    assert res.to_dict()["rounds"][-1]["agreement"] == last.agreement


def test_budget_stops_gracefully(target, digits):
    x, y = digits["x_test"], digits["y_test"]
    oracle = TorchOracle(target, mode="labels", budget=50)
    res = papernot_blackbox(oracle, x[:SEED_SIZE], rounds=4, **FAST)
    assert res.budget_exhausted
    assert res.queries == 50 == oracle.queries
    assert res.rounds[-1].step is None and res.rounds[-1].train_size == 50
    # evaluation that does not fit in the budget is skipped, not raised
    oracle = TorchOracle(target, mode="labels", budget=SEED_SIZE * 2 + 10)
    res = papernot_blackbox(oracle, x[:SEED_SIZE], rounds=1, x_test=x[50:80], y_test=y[50:80], **FAST)
    assert res.budget_exhausted and res.transfer_success is None
    assert oracle.queries <= oracle.budget


def test_errors(target, digits):
    x = digits["x_test"][:10]
    oracle = TorchOracle(target, mode="labels")
    with pytest.raises(TypeError, match="Oracle"):
        papernot_blackbox(target, x)
    with pytest.raises(ValueError, match="attack"):
        papernot_blackbox(oracle, x, attack="fgsmm")
    with pytest.raises(ValueError, match="seed_x"):
        papernot_blackbox(oracle, x + 2)
    with pytest.raises(ValueError, match="rounds"):
        papernot_blackbox(oracle, x, rounds=-1)
    with pytest.raises(TypeError, match="substitute"):
        papernot_blackbox(oracle, x, substitute=3)
    with pytest.raises(ValueError, match="budget"):
        TorchOracle(target, mode="labels", budget=0)
    spent = TorchOracle(target, mode="labels", budget=5)
    spent.predict(x[:5])
    with pytest.raises(ValueError, match="exhausted"):
        papernot_blackbox(spent, x)
    assert issubclass(BudgetExceeded, RuntimeError)


def test_settings_are_validated_once_with_the_documented_defaults():
    s = SubstituteSettings()
    assert (s.rounds, s.augmentation, s.lam, s.tau, s.augment_steps, s.sigma, s.kappa) == (
        6,
        "targeted",
        0.3,
        None,
        5,
        None,
        400,
    )
    assert (s.epochs, s.lr, s.batch_size) == (30, 1e-2, 32)
    assert (s.eps, s.norm, s.attack, s.seed, s.eval_every_round) == (0.3, "linf", "pgd", 0, True)
    assert s.attack_settings() == {"steps": 100, "step_size": 0.01, "loss": "margin"}
    assert s.attack_settings() == {**DEFAULT_ATTACK_OPTIONS, "step_size": 0.01}
    assert SubstituteSettings(eps=0.15).attack_settings()["step_size"] == pytest.approx(0.005)  # eps / 30
    # options given for the default attack update its defaults; another attack gets only its own
    assert SubstituteSettings(attack_options={"steps": 20}).attack_settings()["steps"] == 20
    assert SubstituteSettings(attack_options={"steps": 20}).attack_settings()["loss"] == "margin"
    assert SubstituteSettings(attack="fgsm").attack_settings() == {}
    paper = SubstituteSettings(**PAPER_SETTINGS)
    assert (paper.augmentation, paper.lam, paper.tau, paper.epochs, paper.attack) == ("jacobian", 0.1, 3, 10, "fgsm")
    with pytest.raises(ValueError, match="augmentation"):
        SubstituteSettings(augmentation="jacobean")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.rounds = 3  # type: ignore[misc]
    assert SubstituteSettings(kappa=np.int64(7)).kappa == 7 and type(SubstituteSettings(kappa=np.int64(7)).kappa) is int
    for bad, error, message in [
        ({"lam": 0.0}, ValueError, "lam: expected a number > 0"),
        ({"tau": 0}, ValueError, "tau: expected an int >= 1"),
        ({"sigma": -1}, ValueError, "sigma: expected an int >= 0"),
        ({"kappa": 1.5}, TypeError, "kappa: expected an int"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"eval_every_round": "yes"}, TypeError, "eval_every_round"),
    ]:
        with pytest.raises(error, match=message):
            SubstituteSettings.from_options(bad)
    with pytest.raises(TypeError, match="did you mean 'lr'"):
        SubstituteSettings.from_options({"learning_rate": 0.1})


def test_unknown_setting_is_refused_before_any_query(target, digits):
    oracle = TorchOracle(target, mode="labels")
    with pytest.raises(TypeError, match="no setting 'n_iter'; its settings are rounds, augmentation, lam"):
        papernot_blackbox(oracle, digits["x_test"][:5], n_iter=3)
    assert oracle.queries == 0


def test_the_procedure_class_runs_once_and_matches_the_function(target, digits):
    x = digits["x_test"]
    settings = SubstituteSettings(rounds=1, **FAST_SETTINGS)
    attack = SubstituteAttack(TorchOracle(target, mode="labels"), "mlp", settings)
    res = attack.run(x[:SEED_SIZE], x[60:80], digits["y_test"][60:80])
    again = papernot_blackbox(
        TorchOracle(target, mode="labels"),
        x[:SEED_SIZE],
        x_test=x[60:80],
        y_test=digits["y_test"][60:80],
        rounds=1,
        **FAST,
    )
    assert torch.equal(res.x_adv, again.x_adv) and torch.equal(res.x_train, again.x_train)
    assert res.settings == again.settings and res.settings["rounds"] == 1
    with pytest.raises(RuntimeError, match="once"):
        attack.run(x[:SEED_SIZE])


def test_float_test_labels_are_refused_naming_y_test(target, digits):
    x, y = digits["x_test"], digits["y_test"]
    with pytest.raises(TypeError, match="y_test"):
        papernot_blackbox(TorchOracle(target, mode="labels"), x[:5], x_test=x[5:10], y_test=y[5:10].float(), rounds=0)


# ---------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def saved_target(tmp_path_factory, digits):
    """The logistic-regression black box saved as an advlab model folder (zoo softmax-regression)."""
    from advlab.zoo import build_classifier, save_model

    xf = digits["x_train"].reshape(len(digits["x_train"]), -1).numpy()
    lr = LogisticRegression(max_iter=300).fit(xf, digits["y_train"].numpy())
    clf = build_classifier("softmax-regression", (1, 8, 8), 10)
    with torch.no_grad():
        clf.module[1].weight.copy_(torch.from_numpy(lr.coef_).float())
        clf.module[1].bias.copy_(torch.from_numpy(lr.intercept_).float())
    path = tmp_path_factory.mktemp("target") / "lr"
    save_model(clf.eval(), path, dataset="digits")
    return path


def test_cli_blackbox_local_target(saved_target, tmp_path):
    import json

    from advlab.cli import main
    from advlab.data import load_dataset
    from advlab.zoo import load_model

    out = tmp_path / "bb"
    rc = main(
        [
            "blackbox",
            "--target",
            str(saved_target),
            "--data",
            "digits",
            "--seed-size",
            "20",
            "--n-eval",
            "30",
            "--rounds",
            "2",
            "--epochs",
            "5",
            "--lr",
            "0.05",
            "--eps",
            "0.3",
            "--budget",
            "1000",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rec = json.loads((out / "result.json").read_text())
    assert rec["queries"] == 20 * 2**2
    assert rec["eval_queries"] == 30 * (1 + 3)
    assert rec["oracle_queries_total"] == rec["queries"] + rec["eval_queries"]
    assert isinstance(rec["transfer_success"], float) and 0 <= rec["transfer_success"] <= 1
    assert (out / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    # the reported agreement and transfer are recomputed from the saved substitute and the target
    test = load_dataset("digits", "test", n=50)
    x_eval, y_eval = test.x[20:], test.y[20:]
    target, sub = load_model(saved_target), load_model(out / "substitute")
    agreement = float((sub.predict(x_eval) == target.predict(x_eval)).float().mean())
    assert rec["rounds"][-1]["agreement"] == pytest.approx(agreement)
    # the defaults: PGD on the margin, crafted on a CNN substitute
    assert rec["settings"]["attack"] == "pgd" and "Conv2d" in str(sub.module)
    x_adv = pgd(sub, x_eval, y_eval, ThreatModel("linf", 0.3), generator=0, **rec["settings"]["attack_options"]).x_adv
    assert rec["transfer_success"] == pytest.approx(float((target.predict(x_adv) != y_eval).float().mean()))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--budget", "0"], "--budget"),
        (["--target", "ftp://127.0.0.1:8000"], "http"),
        (["--target", "http://"], "no host"),
        (["--target", "http://127.0.0.1:9", "--retries", "0", "--timeout", "1"], "cannot reach"),
        (["--target", "no/such/folder"], "neither an http"),
    ],
)
def test_cli_blackbox_bad_input(saved_target, tmp_path, capsys, argv, message):
    from advlab.cli import main

    base = ["blackbox", "--target", str(saved_target), "--data", "digits", "--out", str(tmp_path / "o")]
    rc = main(base + argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


# ---------------------------------------------------------------------- a real server on loopback
def _serve_in_thread(app):
    """Start uvicorn on a free loopback port in a daemon thread; return (url, stop)."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        pytest.skip("uvicorn did not start")

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", stop


def test_remote_target_with_server_side_limit(target, digits, tmp_path):
    import json

    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from advlab.blackbox import HTTPOracle
    from advlab.blackbox.server import create_app
    from advlab.cli import main

    x = digits["x_test"]
    app = create_app(target, mode="labels", max_queries=100)
    url, stop = _serve_in_thread(app)
    try:
        oracle = HTTPOracle(url)
        res = papernot_blackbox(oracle, x[:SEED_SIZE], rounds=4, **FAST)
        # 20 + 20 + 40 = 80 fit under the server's limit of 100; the next 80 do not: stop, report, no exception
        assert res.budget_exhausted and res.queries == 100
        torch.testing.assert_close(res.y_train, target.predict(res.x_train))
        # the CLI against the exhausted server reports the limit in one line
        rc = main(
            [
                "blackbox",
                "--target",
                url,
                "--data",
                "digits",
                "--seed-size",
                "10",
                "--n-eval",
                "0",
                "--rounds",
                "1",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "bb"),
            ]
        )
        assert rc == 2
    finally:
        stop()
    url, stop = _serve_in_thread(create_app(target, mode="labels"))
    try:
        rc = main(
            [
                "blackbox",
                "--target",
                url,
                "--data",
                "digits",
                "--seed-size",
                "10",
                "--n-eval",
                "20",
                "--rounds",
                "1",
                "--epochs",
                "3",
                "--out",
                str(tmp_path / "bb2"),
            ]
        )
        assert rc == 0
        rec = json.loads((tmp_path / "bb2" / "result.json").read_text())
        assert rec["target"] == {"kind": "http", "url": url} and rec["queries"] == 20
    finally:
        stop()


def test_cli_blackbox_shape_mismatch(saved_target, tmp_path, capsys):
    """A digits (1, 8, 8) target with MNIST (1, 28, 28) data: one clear line naming both shapes."""
    import os
    from pathlib import Path

    from advlab.cli import main

    data_dir = os.environ.get("ADVLAB_DATA", "/work/shared/data")
    if not (Path(data_dir) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("MNIST files not available")
    rc = main(
        [
            "blackbox",
            "--target",
            str(saved_target),
            "--data",
            "mnist",
            "--data-dir",
            data_dir,
            "--seed-size",
            "5",
            "--n-eval",
            "5",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "(1, 28, 28)" in err and "(1, 8, 8)" in err


def test_cli_defaults_are_the_documented_settings():
    """``advlab blackbox`` with no substitute options runs the library's defaults, and its help names them."""
    from advlab.cli import build_parser
    from advlab.cli.blackbox import _settings

    args = build_parser().parse_args(["blackbox", "--target", "http://127.0.0.1:1", "--out", "unused"])
    assert (args.seed_size, args.n_eval, args.substitute) == (150, 1000, DEFAULT_SUBSTITUTE)
    given = SubstituteSettings.from_options(_settings(args, float(args.eps)))
    assert given == SubstituteSettings()
    paper = build_parser().parse_args(
        ["blackbox", "--target", "x", "--out", "u", "--augmentation", "jacobian", "--lam", "0.1", "--tau", "3"]
        + ["--epochs", "10", "--attack", "fgsm"]
    )
    assert SubstituteSettings.from_options(_settings(paper, 0.3)) == SubstituteSettings(**PAPER_SETTINGS)
