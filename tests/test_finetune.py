"""Finetuning: both tasks train, checkpoints reload and forecast, resume exactly, survive
crashes while writing, clear errors."""
from __future__ import annotations

import functools
import os
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_quant import KronosPredictor
from kronos_quant.cli import main
from kronos_quant.config import preset_configs
from kronos_quant.data import panel_from_frames, synthetic_panel
from kronos_quant.finetune import FinetuneConfig, Trainer, checkpoint, read_metrics
from kronos_quant.finetune.tasks import causal_s2_attention
from kronos_quant.hub import WEIGHTS_NAME, read_state_dict
from kronos_quant.model import Kronos
from kronos_quant.testing import TINY_PREDICTOR
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


def _tiny_cfg(tmp, name, tiny_dirs, **kw) -> FinetuneConfig:
    """The tiny pair of conftest's ``tiny_dirs``: its predictor has dropout 0.1 everywhere."""
    tok, model = tiny_dirs
    return _cfg(tmp, name, task="predictor", init=str(model), tokenizer=str(tok), max_steps=6,
                **kw)


def _saved_weights(run_dir) -> dict[str, torch.Tensor]:
    return read_state_dict(run_dir / "last" / WEIGHTS_NAME)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_straight(tmp_path_factory, panel, tiny_dirs):
    """Weights after 6 uninterrupted steps of the tiny predictor."""
    tmp = tmp_path_factory.mktemp("straight")
    return _saved_weights(Trainer(_tiny_cfg(tmp, "run", tiny_dirs), panel=panel).fit().run_dir)


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path, panel, tiny_dirs,
                                                             tiny_straight, teacher_forcing):
    assert TINY_PREDICTOR.resid_dropout_p == 0.1 and TINY_PREDICTOR.attn_dropout_p == 0.1
    cfg = functools.partial(_tiny_cfg, tmp_path, tiny_dirs=tiny_dirs,
                            teacher_forcing=teacher_forcing)
    straight = tiny_straight if teacher_forcing else _saved_weights(
        Trainer(cfg("straight"), panel=panel).fit().run_dir)
    assert Trainer(cfg("part"), panel=panel).fit(stop_after=3).step == 3
    assert (tmp_path / "part" / "last" / "rng" / "rank-0.pt").is_file()
    shutil.copytree(tmp_path / "part", tmp_path / "no_rng")
    shutil.rmtree(tmp_path / "no_rng" / "last" / "rng")
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # the caller's state must not matter
    resumed = Trainer(cfg("part", resume=True), panel=panel)
    assert resumed.step == 3 and resumed.fit().step == 6
    assert _same(_saved_weights(tmp_path / "part"), straight)
    steps = [r["step"] for r in read_metrics(tmp_path / "part") if r["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    # Control: without the saved random states the dropout (and s1) draws differ.
    Trainer(cfg("no_rng", resume=True), panel=panel).fit()
    assert not _same(_saved_weights(tmp_path / "no_rng"), straight)


class SimulatedCrash(RuntimeError):
    pass


def _arm_crash(monkeypatch, trainer: Trainer, point: str) -> None:
    """Make the next write of last/ die at ``point``."""
    last = trainer.run_dir / "last"
    if point == "while_filling":
        def write_last(folder, rng_states):
            trainer.task.save(folder)  # weights written, trainer state not yet
            raise SimulatedCrash(point)

        monkeypatch.setattr(trainer, "_write_last", write_last)
        return
    rename, fsync_dir = checkpoint._rename, checkpoint._fsync_dir
    renamed_to = []

    def crashing_rename(src, dst):
        if (point == "moving_old_away" and src == last) or (
                point == "moving_new_in" and dst == last):
            raise SimulatedCrash(point)
        rename(src, dst)
        renamed_to.append(dst)

    def crashing_fsync_dir(path):  # called right after the new folder is renamed in
        if point == "before_deleting_old" and renamed_to[-1:] == [last]:
            raise SimulatedCrash(point)
        fsync_dir(path)

    monkeypatch.setattr(checkpoint, "_rename", crashing_rename)
    monkeypatch.setattr(checkpoint, "_fsync_dir", crashing_fsync_dir)


@pytest.mark.parametrize("point, step", [("while_filling", 2), ("moving_old_away", 2),
                                         ("moving_new_in", 2), ("before_deleting_old", 4)])
def test_a_crash_while_writing_last_leaves_a_consistent_checkpoint(
        tmp_path, panel, tiny_dirs, tiny_straight, monkeypatch, point, step):
    trainer = Trainer(_tiny_cfg(tmp_path, "run", tiny_dirs), panel=panel)
    trainer.fit(stop_after=2)
    at_step = {2: _saved_weights(tmp_path / "run")}
    _arm_crash(monkeypatch, trainer, point)
    with pytest.raises(SimulatedCrash):
        trainer.fit(stop_after=4)
    at_step[4] = {k: v.detach().clone() for k, v in trainer.task.module.state_dict().items()}
    monkeypatch.undo()
    leftovers = {"while_filling": "last.tmp", "moving_old_away": "last.tmp",
                 "moving_new_in": "last.old", "before_deleting_old": "last.old"}
    assert (tmp_path / "run" / leftovers[point]).is_dir()
    resumed = Trainer(_tiny_cfg(tmp_path, "run", tiny_dirs, resume=True), panel=panel)
    assert resumed.step == step
    assert _same(resumed.task.module.state_dict(), at_step[step])
    adam = next(iter(resumed.optimizer.state.values()))
    assert int(adam["step"]) == step and resumed.scheduler.last_epoch == step
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == [
        "best", "last", "tokenizer"]
    resumed.fit()
    assert _same(_saved_weights(tmp_path / "run"), tiny_straight)
    Kronos.from_pretrained(tmp_path / "run" / "best")  # complete (after fit: it draws init RNG)


def test_preserved_rng_leaves_every_stream_where_it_was():
    def seed():
        random.seed(5), np.random.seed(5), torch.manual_seed(5)

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed()
    expected = draw()
    seed()
    with checkpoint.preserved_rng(torch.device("cpu")):
        assert draw() == expected  # draws inside the block ...
    assert draw() == expected  # ... are drawn again after it


def test_recover_puts_the_old_folder_back_or_drops_leftovers(tmp_path):
    target = tmp_path / "last"
    (tmp_path / "last.old").mkdir()
    (tmp_path / "last.old" / "a").write_text("old")
    (tmp_path / "last.tmp").mkdir()
    checkpoint.recover(target)
    assert (target / "a").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["last"]
    checkpoint.write_folder_atomic(target, lambda d: (d / "b").write_text("new"))
    assert sorted(os.listdir(target)) == ["b"] and sorted(os.listdir(tmp_path)) == ["last"]


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
    assert all(a <= b + 1e-12 for a, b in zip(f[:10], f[1:11], strict=True))  # rising warm-up
    assert f[-1] < 0.01 if schedule != "constant" else f[-1] == 1.0
