"""The `audit` console script: verify a saved checkpoint from the shell."""

from __future__ import annotations

import numpy as np
import timm
from typer.testing import CliRunner

from audit.cli import app
from audit.models import save_state_dict
from tests.helpers import randomize_bn


def test_cli_verify_on_safetensors(tmp_path):
    model = randomize_bn(timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2,
                                           zero_init_last=False))
    path = save_state_dict(model, tmp_path / "m.safetensors")
    res = CliRunner().invoke(app, ["verify", str(path), "--arch", "resnet18", "--shape", "32,32"])
    assert res.exit_code == 0, res.output
    assert "8 residual blocks" in res.output and "identity_patch" in res.output


def test_cli_verify_on_a_model_folder_uses_its_card(tmp_path):
    """A folder written by the trainers (or `audit demo`) verifies without --arch: the card
    names the narrow ResNet and its arguments, and the input shape."""
    from audit.data.cohort import Case, Cohort
    from audit.training import TrainConfig, train_classifier

    rng = np.random.default_rng(0)
    cohort = Cohort([Case(f"c{i}", rng.normal(size=(2, 24, 24)).astype(np.float32), ("A", "B"), i % 2)
                     for i in range(8)])
    cfg = TrainConfig(arch_kwargs={"channels": (8, 16, 32, 64), "stem_width": 8}, epochs=1, batch_size=8)
    train_classifier({"train": cohort, "val": cohort}, cfg, tmp_path / "m")
    res = CliRunner().invoke(app, ["verify", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "8 residual blocks" in res.output
    res = CliRunner().invoke(app, ["verify", str(tmp_path / "m"), "--arch", "resnet18"])
    assert res.exit_code == 2 and "model folder" in res.output


def test_cli_refuses_unsafe_checkpoint_and_names_the_flag(tmp_path):
    import torch

    torch.save({"weights": torch.zeros(2), "fn": print}, tmp_path / "evil.pt")  # needs a GLOBAL
    res = CliRunner().invoke(app, ["verify", str(tmp_path / "evil.pt"), "--arch", "resnet18"])
    assert res.exit_code == 2
    assert "--trust-checkpoint" in res.output


def test_readers_cli_example_writes_every_table(tmp_path):
    """`audit readers --example` writes the simulated study and every instrument's table;
    the GEE table equals the library call on the same file."""
    import pandas as pd

    from audit.readers import gee_assistance

    out = tmp_path / "rs"
    r = CliRunner().invoke(app, ["readers", "--example", "--out", str(out), "--n-boot", "50"])
    assert r.exit_code == 0, r.output
    for name in ("gee_contrasts", "bootstrap_table", "mrmc_or_differences", "mrmc_dbm_differences", "roc_auc",
                 "calibration_ai_metrics", "decision_curve_ai", "outcomes", "cochran_q", "summary"):
        assert any(p.name.startswith(name) for p in out.iterdir()), name
    gee = pd.read_csv(out / "gee_contrasts.csv")
    ref = gee_assistance(pd.read_csv(out / "example_reads.csv")).contrasts
    np.testing.assert_allclose(gee["odds_ratio"], ref["odds_ratio"], rtol=1e-9)
    assert "readers treated as fixed" in (out / "summary.txt").read_text()
    # ... and its own report: the odds ratios as printed in the table, and the four figures
    html = (out / "report.html").read_text(encoding="utf-8")
    for v in gee["odds_ratio"]:
        assert f"<td>{v:.3g}</td>" in html
    for anchor in ("reader_roc", "reader_calibration", "reader_decision", "reader_outcomes"):
        assert f'<figure id="{anchor}">' in html, anchor
    assert "report.html" in " ".join(r.output.split())


def test_readers_cli_bad_file_names_the_problem(tmp_path):
    import pandas as pd

    p = tmp_path / "reads.csv"
    pd.DataFrame({"reader": [1, 1], "case": [1, 2], "truth": [0, 2], "phase": ["a", "a"]}).to_csv(p, index=False)
    r = CliRunner().invoke(app, ["readers", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "'truth' (truth) must be binary" in r.output
