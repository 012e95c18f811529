"""Every public entry point but the attacks (tests/attacks/test_attack_matrix.py) against the model matrix.

``evaluate`` (fast preset with the masking checks, then the report written, read back and compared), a trainer
on the BatchNorm, dropout and residual networks, ``serve`` queried through an ``HTTPOracle``, Papernot's
substitute attack, the physical destruction rate and ``explain``, on every model of tests/model_matrix.py. Each
checks what it returns against the model itself (an independent prediction), not only that it runs; BatchNorm's
evaluation crash (a 0-dim buffer in the checkpoint fingerprint) is covered by every BatchNorm entry here.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from advlab import ThreatModel
from advlab.attacks import square
from advlab.blackbox import HTTPOracle, TorchOracle, as_module, papernot_blackbox
from advlab.defenses import DEFENSES
from advlab.evaluation import evaluate
from advlab.explain import explain
from advlab.physical import measure_destruction
from advlab.reports import load_report, render_comparison, write_report
from model_matrix import MODELS, TRAINABLE, MatrixModel, matrix_model


@pytest.fixture(autouse=True)
def _fast_provenance(monkeypatch):
    """Skip the git call of provenance() (tested in tests/reports and the CLI tests)."""
    import advlab.evaluation.engine as engine

    monkeypatch.setattr(engine, "provenance", lambda **extra: {"versions": {}, "git_commit": None, **extra})


def predicted(case: MatrixModel, x: torch.Tensor) -> torch.Tensor:
    """The model's labels on ``x`` without advlab: eval mode (an export keeps its own), ``logit > 0`` for one logit."""
    model = case.fresh()
    if case.name != "exported":
        model.eval()
    with torch.no_grad():
        out = model(x)
    return (out.reshape(-1) > 0).long() if case.name == "single_logit" else out.argmax(1)


def _quietly(case: MatrixModel):
    """A context that expects the train-mode warning for ``batchnorm_train`` and ignores nothing else."""
    if case.name == "batchnorm_train":
        return pytest.warns(UserWarning, match="train mode")
    return warnings.catch_warnings()


# ---------------------------------------------------------------------- evaluate, report
WITH_CHECKS = ("batchnorm", "single_logit", "exported")
"""Models evaluated with the gradient-masking checks (the checks' attacks run on every model in the attack matrix)."""


@pytest.mark.parametrize("name", MODELS)
def test_evaluate_and_report(name, tmp_path):
    case = matrix_model(name)
    model = case.fresh()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eps = [case.eps("linf") / 2, case.eps("linf")]
    checks = name in WITH_CHECKS
    with _quietly(case):
        report = evaluate(model, (case.x, case.y), eps, attacks="fast", n=8, checks=checks, checkpoint_dir=tmp_path)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "evaluate changed the model"
    # the numbers against the model itself
    assert report.clean_accuracy == 1.0  # the matrix's examples are classified correctly
    pred = predicted(case, report.x_adv)
    robust = torch.tensor([row[-1] for row in report.examples["robust"]])
    assert torch.equal(robust, pred == case.y), "an example reported robust is misclassified, or the reverse"
    assert float((report.x_adv - case.x).abs().amax()) <= eps[-1] + 1e-6
    assert report.robust_accuracy() == pytest.approx(float(robust.float().mean()))
    assert len(report.checks) == (6 if checks else 0)
    # the report written, read back, rendered, compared
    json_path, html_path = write_report(report, tmp_path / "out")
    again = load_report(tmp_path / "out")
    assert again.robust_accuracy() == report.robust_accuracy() and again.x_adv is not None
    assert json.loads(json_path.read_text())["results"][-1]["n"] == 8
    assert "robust accuracy" in html_path.read_text().lower()
    assert "Robustness comparison" in render_comparison([report, again])


# ---------------------------------------------------------------------- train
@pytest.mark.parametrize("name", TRAINABLE)
def test_a_trainer_fits_the_model(name):
    case = matrix_model(name)
    model = case.fresh().train()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = DEFENSES.get("pgd")(epochs=1, batch_size=64, lr=1e-3, eps=0.1, steps=2, seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # crafting mid-training does not warn about train mode
        fitted = trainer.fit(model, (case.x_train[:128], case.y_train[:128]), (case.x, case.y))
    assert fitted is trainer and len(trainer.history_) == 1
    assert not model.training and not trainer.model_.training
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) > 0 for m in bn)  # the running statistics were trained too
    torch.testing.assert_close(
        trainer.history_[0]["val_accuracy"], float((predicted_of(model, case) == case.y).float().mean())
    )


def predicted_of(model: torch.nn.Module, case: MatrixModel) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(case.x).argmax(1)


# ---------------------------------------------------------------------- serve + HTTPOracle
def _bridge(client):
    """An httpx transport that hands every request to the Starlette test client (the real app, no socket)."""
    import httpx

    def handle(request: httpx.Request) -> httpx.Response:
        answer = client.request(request.method, request.url.path, content=request.content, headers=request.headers)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("name", MODELS)
def test_serve_and_http_oracle(name):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from advlab.blackbox.server import create_app

    case = matrix_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient may warn about its httpx backend; train mode
        from starlette.testclient import TestClient

        app = create_app(case.fresh(), mode="scores", input_shape=tuple(case.x.shape[1:]), bounds=case.bounds)
        oracle = HTTPOracle("http://matrix", transport=_bridge(TestClient(app)), retries=0)
    assert oracle.num_classes == case.num_classes
    assert torch.equal(oracle.predict(case.x).cpu(), predicted(case, case.x))
    threat = ThreatModel("linf", case.eps("linf"), case.bounds)
    result = square(as_module(oracle), case.x[:4], case.y[:4], threat, max_queries=30, generator=0)
    assert bool(threat.contains(torch.as_tensor(result.x_adv), case.x[:4]).all())
    assert torch.equal(torch.as_tensor(result.success), predicted(case, torch.as_tensor(result.x_adv)) != case.y[:4])


# ---------------------------------------------------------------------- black box: Papernot's substitute
@pytest.mark.parametrize("name", MODELS)
def test_substitute_attack(name):
    case = matrix_model(name)
    with _quietly(case):
        oracle = TorchOracle(case.fresh(), mode="labels", bounds=case.bounds)
    result = papernot_blackbox(
        oracle, case.x_train[:16], rounds=1, epochs=2, eps=case.eps("linf"), x_test=case.x, y_test=case.y, seed=0
    )
    assert [r.train_size for r in result.rounds] == [16, 32]  # 16 seeds, doubled by one augmentation
    assert result.queries + result.eval_queries == oracle.queries and result.queries == 32
    fooled = predicted(case, result.x_adv) != case.y
    assert torch.equal(result.oracle_fooled.cpu(), fooled)
    assert result.transfer_success == pytest.approx(float(fooled.float().mean()))


# ---------------------------------------------------------------------- physical: destruction rate
@pytest.mark.parametrize("name", MODELS)
def test_destruction_rate(name):
    """Images are printed and photographed; a tabular model is refused with a message that says so."""
    case = matrix_model(name)
    model = case.fresh()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if name == "tabular":
        with pytest.raises(ValueError, match=r"expect a floating batch of images \(N, C, H, W\)"):
            measure_destruction(model, case.x, case.y, "noise=0.05", attacks=["fgsm"], eps=[0.2])
        return
    report = measure_destruction(model, case.x, case.y, "noise=0.05", attacks=["fgsm"], eps=[0.2], draws=1)
    (row,) = report.rows
    assert row.clean_accuracy == 1.0 and 0.0 <= row.destruction_rate <= 1.0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------- explain
@pytest.mark.parametrize("name", MODELS)
def test_explain(name, tmp_path):
    case = matrix_model(name)
    with _quietly(case):
        report = explain(case.fresh(), (case.x, case.y), n=8, eps=case.eps("linf"))
    path = report.write(tmp_path)
    assert path.exists() and (tmp_path / "explain.json").exists()
