"""Finetuning: both tasks train, checkpoints reload and forecast, resume, clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_quant import KronosPredictor
from kronos_quant.cli import main
from kronos_quant.config import preset_configs
from kronos_quant.data import panel_from_frames, synthetic_panel
from kronos_quant.finetune import FinetuneConfig, Trainer, read_metrics
from kronos_quant.finetune.tasks import causal_s2_attention
from kronos_quant.model import Kronos
from kronos_quant.tokenizer import KronosTokenizer

SMALL = dict(lookback=16, pred_len=4, batch_size=8, val_fraction=0.25, progress=False,
             tensorboard=False, log_every=1, lr=3e-3)


def _cfg(tmp, name, **kw) -> FinetuneConfig:
    return FinetuneConfig(**{**SMALL, "out_dir": str(tmp / name), **kw})


@pytest.fixture(scope="module")
def panel():
    return synthetic_panel(3, 120, seed=3)


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory, panel):
    tmp = tmp_path_factory.mktemp("tok")
    result = Trainer(_cfg(tmp, "tok", task="tokenizer", max_steps=6), panel=panel).fit()
    return result


def _periodic_panel() -> pd.DataFrame:
    """A learnable pattern: a noiseless 8-bar cycle in every column."""
    stamps = pd.bdate_range("2020-01-01", periods=160)
    wave = 100 + 5 * np.sin(2 * np.pi * np.arange(160) / 8)
    frame = pd.DataFrame({"open": wave, "high": wave + 1, "low": wave - 1, "close": wave,
                          "volume": 1000 + 100 * np.cos(2 * np.pi * np.arange(160) / 8)},
                         index=stamps)
    return panel_from_frames({"A": frame, "B": frame * 1.5})


def test_tokenizer_run_writes_checkpoints_config_and_metrics(tokenizer_run):
    run = tokenizer_run.run_dir
    assert tokenizer_run.step == 6 and tokenizer_run.best_metric is not None
    assert (run / "config.yaml").is_file() and (run / "last" / "trainer_state.pt").is_file()
    tok = KronosTokenizer.from_pretrained(run / "best")
    assert tok.s1_bits == 4
    records = read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "recon_mse", "bsq", "lr"} <= set(records[0])
    assert any(r["kind"] == "val" and "recon_mse" in r for r in records)


def test_predictor_checkpoint_reloads_and_forecasts(tmp_path, panel, tokenizer_run):
    cfg = _cfg(tmp_path, "pred", task="predictor", tokenizer=str(tokenizer_run.run_dir / "best"),
               max_steps=4)
    result = Trainer(cfg, panel=panel).fit()
    assert result.step == 4 and set(result.last_val) == {"loss", "ce_s1", "ce_s2"}
    predictor = KronosPredictor.from_pretrained(str(result.run_dir / "best"),
                                                str(result.run_dir / "tokenizer"), device="cpu")
    frame = panel.xs("SYN000", level="instrument").iloc[-16:]
    fc = predictor.forecast(frame, pred_len=3, sample_count=2, seed=0)
    assert fc.paths.shape == (2, 3, 6) and np.isfinite(fc.paths).all()


def test_losses_go_down_on_a_learnable_pattern(tmp_path):
    panel = _periodic_panel()
    tok = Trainer(_cfg(tmp_path, "tok", task="tokenizer", epochs=3, val_fraction=0.2),
                  panel=panel)
    tok_before = tok.validate()["recon_mse"]
    tok_after = tok.fit().last_val["recon_mse"]
    assert tok_after < 0.5 * tok_before
    cfg = _cfg(tmp_path, "pred", task="predictor", tokenizer=str(tmp_path / "tok" / "best"),
               epochs=6, val_fraction=0.2)
    pred = Trainer(cfg, panel=panel)
    before = pred.validate()["loss"]
    after = pred.fit().last_val["loss"]
    assert after < 0.6 * before


def test_resume_continues_from_the_saved_step(tmp_path, panel, tokenizer_run):
    tok = str(tokenizer_run.run_dir / "best")
    full = Trainer(_cfg(tmp_path, "full", task="predictor", tokenizer=tok, max_steps=6),
                   panel=panel).fit()
    part = Trainer(_cfg(tmp_path, "part", task="predictor", tokenizer=tok, max_steps=6),
                   panel=panel).fit(stop_after=3)
    assert part.step == 3
    resumed = Trainer(_cfg(tmp_path, "part", task="predictor", tokenizer=tok, max_steps=6,
                           resume=True), panel=panel)
    assert resumed.step == 3
    assert resumed.fit().step == 6
    a = Kronos.from_pretrained(full.run_dir / "last").state_dict()
    b = Kronos.from_pretrained(tmp_path / "part" / "last").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [r["step"] for r in read_metrics(tmp_path / "part") if r["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_errors(tmp_path, panel, tokenizer_run):
    tok = str(tokenizer_run.run_dir / "best")
    with pytest.raises(ValueError, match="nothing to resume"):
        Trainer(_cfg(tmp_path, "none", task="predictor", tokenizer=tok, resume=True), panel=panel)
    Trainer(_cfg(tmp_path, "run", task="predictor", tokenizer=tok, max_steps=2),
            panel=panel).fit()
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        Trainer(_cfg(tmp_path, "run", task="predictor", tokenizer=tok, max_steps=2), panel=panel)
    with pytest.raises(ValueError, match=r"differs from the saved run in lr: saved 0.003, now 0.1"):
        Trainer(_cfg(tmp_path, "run", task="predictor", tokenizer=tok, max_steps=2, lr=0.1,
                     resume=True), panel=panel)


def test_tokenizer_predictor_bit_mismatch(tmp_path, panel, tokenizer_run):
    cfg = _cfg(tmp_path, "bad", task="predictor", init="mini",
               tokenizer=str(tokenizer_run.run_dir / "best"))
    with pytest.raises(ValueError, match="s1_bits=4, s2_bits=4 but the predictor .* s1_bits=6"):
        Trainer(cfg, panel=panel)


def test_batch_larger_than_the_data_and_amp_on_cpu(tmp_path, panel):
    with pytest.raises(ValueError, match="more than the .* training windows per epoch"):
        Trainer(_cfg(tmp_path, "big", task="tokenizer", batch_size=4096), panel=panel)
    with pytest.raises(ValueError, match="amp=bf16 needs a CUDA device"):
        Trainer(_cfg(tmp_path, "amp", task="tokenizer", amp="bf16", device="cpu"), panel=panel)


def test_sampled_s1_mode_and_accumulation_train(tmp_path, panel, tokenizer_run):
    cfg = _cfg(tmp_path, "sampled", task="predictor", teacher_forcing=False, accum_steps=2,
               schedule="cosine", tokenizer=str(tokenizer_run.run_dir / "best"), max_steps=2)
    result = Trainer(cfg, panel=panel).fit()
    assert result.step == 2 and np.isfinite(result.last_val["loss"])


def test_validation_s2_logits_do_not_see_later_bars():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Kronos.from_config(preset_configs("nano")[1]).eval()
    gen = torch.Generator().manual_seed(1)
    s1, s2 = torch.randint(0, 16, (2, 1, 10), generator=gen)
    s1_later = s1.clone()
    s1_later[:, 6:] = (s1[:, 6:] + 1) % 16  # change tokens from bar 6 on

    def s2_logits(ids):
        return model(ids, s2, use_teacher_forcing=True, s1_targets=ids)[1][:, :6]

    with torch.no_grad():
        with causal_s2_attention(model):
            assert torch.allclose(s2_logits(s1), s2_logits(s1_later), atol=1e-6)
        # Plain evaluation mode attends to later bars: the leak the context manager removes.
        assert not torch.allclose(s2_logits(s1), s2_logits(s1_later), atol=1e-4)
    assert not model.dep_layer.cross_attn.training  # restored


def test_cli_trains_and_reports_errors(tmp_path, panel, capsys):
    data = tmp_path / "panel.csv"
    panel.reset_index().to_csv(data, index=False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lookback: 16\npred_len: 4\nbatch_size: 8\nval_fraction: 0.25\n")
    out = tmp_path / "cli_tok"
    code = main(["-q", "finetune", "tokenizer", "--config", str(cfg), "--data", str(data),
                 "--out", str(out), "--set", "max_steps=2", "--set", "tensorboard=false"])
    assert code == 0
    assert "tokenizer: 2 steps" in capsys.readouterr().out
    assert KronosTokenizer.from_pretrained(out / "last").s1_bits == 4
    code = main(["finetune", "predictor", "--config", str(cfg), "--data", str(data),
                 "--out", str(tmp_path / "p")])
    assert code == 2
    assert "needs `tokenizer`" in capsys.readouterr().err


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_learning_rate_schedules_warm_up_then_decay(schedule):
    from kronos_quant.finetune.train import lr_factor

    f = [lr_factor(s, schedule=schedule, warm=10, total=100) for s in range(100)]
    assert f[0] < 0.2 and max(f) == pytest.approx(1.0, abs=0.05)
    assert all(a <= b + 1e-12 for a, b in zip(f[:10], f[1:11]))  # rising warm-up
    assert f[-1] < 0.01 if schedule != "constant" else f[-1] == 1.0
