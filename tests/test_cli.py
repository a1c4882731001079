"""``ptqx run`` / ``ptqx report`` end to end on a seconds-sized digits audit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ptqx.cli import build_parser, main

TINY = [
    "run",
    "--dataset", "digits",
    "--models", "4",
    "--universe", "160",
    "--epochs", "1",
    "--methods", "rtn",
    "--bits", "4,2",
    "--attacks", "lira_online,global_threshold",
    "--calib-size", "16",
    "--bootstrap", "8",
    "--no-progress",
]  # fmt: skip


def test_cli_tiny_run_then_report_rebuild(tmp_path, capsys):
    toml = tmp_path / "audit.toml"
    toml.write_text('[quant_options.rtn]\ngrid = "minmax"\n[train]\nbatch_size = 32\n')
    out = tmp_path / "run"
    assert main([*TINY, "--config", str(toml), "--out", str(out)]) == 0
    assert "results.json" in capsys.readouterr().out
    for name in (
        "manifest.json",
        "keep.npy",
        "labels.npy",
        "results.json",
        "results.csv",
        "report.md",
        "report.html",
    ):
        assert (out / name).exists(), name
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["bits"] == [4.0, 2.0] and man["config"]["methods"] == ["rtn"]
    assert man["train_config"]["epochs"] == 1 and man["train_config"]["batch_size"] == 32
    assert np.load(out / "scores" / "rtn-2b.npy").shape == (4, 160, 2)
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 10

    for name in ("report.md", "report.html"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "rtn-2b" in (out / "report.md").read_text()
    # A rerun of the same command finds everything done.
    assert main([*TINY, "--config", str(toml), "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["units_run_last_invocation"] == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--methods", "rtn,telepathy"], "methods: unknown or not installed ['telepathy']"),
        (["--bits", "4,5"], "bits: 5"),
        (["--models", "-3"], "n_models"),
        (["--data-root", "/nonexistent/ptqx"], "data_root"),
        (["--config", "/nonexistent/audit.toml"], "does not exist"),
    ],
)
def test_cli_bad_config_fails_before_work(tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    assert main([*TINY, "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("ptqx run: invalid audit configuration")
    assert not out.exists()


def test_cli_parsing():
    p = build_parser()
    a = p.parse_args(
        ["run", "--methods", "rtn,obc", "--bits", "4,2,1.58", "--calib-augment", "false"]
    )
    assert a.methods == ("rtn", "obc") and a.bits == (4.0, 2.0, 1.58) and a.calib_augment is False
    with pytest.raises(SystemExit):
        p.parse_args(["run", "--bits", "4,two"])
    a = p.parse_args(["run"])
    assert a.config is None and a.methods is None


def test_cli_report_on_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_cli_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "argument parsing only" not in out and "membership-inference" in out


def test_cli_config_that_is_a_folder(tmp_path, capsys):
    assert main([*TINY, "--config", str(tmp_path), "--out", str(tmp_path / "never")]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema": "ptqx.audit.results/1", "rows": [{"con', "not readable JSON"),
        ('{"schema": "ptqx.audit.results/1", "configs": [], "rows": []}', "no result rows"),
        ("[]", "not a ptqx results file"),
        ('{"configs": [{"name": "fp32"}], "rows": [{"attack": "loss"}]}', "malformed results"),
    ],
)
def test_cli_report_on_damaged_results(tmp_path, capsys, text, message):
    (tmp_path / "results.json").write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptqx report:") and message in err


@pytest.mark.parametrize(
    "flags, toml, message",
    [
        # OBC (damp 0) with 16 images: layer2.0 (288 inputs, 2x2 outputs) gets 64 rows,
        # singular for every model. Each quantize unit used to fail after all models were
        # trained.
        (["--methods", "rtn,obc"], "", "'layer2.0' has 288 inputs and gets 64 rows"),
        # AdaRound draws minibatches of 32 from the 16 calibration images.
        (["--methods", "adaround"], "", "recon_batch_size=32"),
        # An option value, not only its name, is checked before training.
        (["--methods", "gptq"], "[quant_options.gptq]\ndamp = -1\n", "damp: expected a finite"),
    ],
)
def test_cli_quantizer_problems_fail_before_training(tmp_path, capsys, flags, toml, message):
    cfg = tmp_path / "audit.toml"
    cfg.write_text(toml)
    out = tmp_path / "never"
    assert main([*TINY, "--config", str(cfg), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptqx run: invalid audit configuration") and message in err
    assert not out.exists()


def test_cli_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import ptqx.experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ptqx.experiment, "audit", interrupted)
    assert main([*TINY, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "interrupted; finished units are kept in" in err and "To resume: ptqx" in err


@pytest.mark.parametrize(
    "dataset, image_size, classes", [("cifar100", 32, 100), ("tinyimagenet", 64, 200)]
)
def test_resnet18_defaults_give_obc_a_regular_hessian(dataset, image_size, classes):
    # README's `ptqx run --dataset cifar100 --arch resnet18` must not be refused: with the
    # generic 256 calibration images OBC's undamped fc Hessian (512 inputs) is singular.
    from types import SimpleNamespace

    from ptqx.experiment.audit import _quantizer_problems
    from ptqx.experiment.config import AuditConfig, dataset_defaults

    defaults = dataset_defaults(dataset)
    config = AuditConfig(**{**defaults, "arch": "resnet18", "methods": ("obc",)})
    ds = SimpleNamespace(num_classes=classes, in_channels=3, image_size=image_size)
    assert _quantizer_problems(config, ds, config.calib_size) == []
    (problem,) = _quantizer_problems(config, ds, 256)  # the generic default is refused
    assert "'fc'" in problem and "set calib_size >= 512" in problem


def test_cli_config_lists_every_problem_at_once(tmp_path, capsys):
    # Before, a misspelled table hid the unknown setting, which hid the bad values, which
    # hid the [train] problem: four runs of the command to learn what one could say.
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[audit]\ndataset = "digits"\nn_models = 3\nbits = [4, 7]\nmethodz = ["rtn"]\n'
        "[trian]\nepochs = 2\n[train]\nepochs = -1\n"
    )
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    for problem in ("'trian'", "['methodz']", "n_models:", "bits: 7", "train: epochs"):
        assert problem in err, problem
    assert not (tmp_path / "never").exists()
