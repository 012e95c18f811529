"""The embedded demo writes its report, and its numbers are consistent with the models it trains."""

from __future__ import annotations

import json

from advlab.demo import TRAIN_EPS, run_demo


def test_demo_report(tmp_path):
    record = run_demo(tmp_path, epochs=6)
    for name in ("demo.json", "summary.md", "robust_accuracy.png", "examples_standard.png", "examples_adversarial.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / "demo.json").read_text())
    assert on_disk["eps"] == record["eps"]
    eps = record["eps"]
    for label in ("standard", "adversarial"):
        m = on_disk["models"][label]
        # At eps = 0 an attack cannot change anything: the curve starts at the clean accuracy.
        assert abs(m["pgd_accuracy"][0] - m["clean_accuracy"]) < 1e-6
        assert abs(m["fgsm_accuracy"][0] - m["clean_accuracy"]) < 1e-6
        assert all(0.0 <= v <= 1.0 for v in m["pgd_accuracy"])
    i = eps.index(TRAIN_EPS)
    assert on_disk["models"]["standard"]["clean_accuracy"] > 0.85
    # Adversarial training must buy robustness at its training eps, even after a few epochs.
    assert on_disk["models"]["adversarial"]["pgd_accuracy"][i] > on_disk["models"]["standard"]["pgd_accuracy"][i]
    summary = (tmp_path / "summary.md").read_text()
    assert f"{100 * on_disk['models']['standard']['clean_accuracy']:.1f}%" in summary
