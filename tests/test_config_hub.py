"""Configs round-trip with the published keys; checkpoints load strictly."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from kronos_quant import Kronos, KronosConfig, KronosTokenizer, KronosTokenizerConfig
from kronos_quant.hub import CheckpointMismatchError
from kronos_quant.testing import TINY_PREDICTOR, TINY_TOKENIZER, tiny_pair

TOKENIZER_KEYS = {"d_in", "d_model", "n_heads", "ff_dim", "n_enc_layers", "n_dec_layers",
                  "ffn_dropout_p", "attn_dropout_p", "resid_dropout_p", "s1_bits", "s2_bits",
                  "beta", "gamma0", "gamma", "zeta", "group_size"}
PREDICTOR_KEYS = {"s1_bits", "s2_bits", "n_layers", "d_model", "n_heads", "ff_dim",
                  "ffn_dropout_p", "attn_dropout_p", "resid_dropout_p", "token_dropout_p",
                  "learn_te"}


def test_config_keys_are_the_published_ones(tmp_path):
    assert set(KronosTokenizerConfig().to_dict()) == TOKENIZER_KEYS
    assert set(KronosConfig().to_dict()) == PREDICTOR_KEYS
    for cfg in (TINY_TOKENIZER, TINY_PREDICTOR):
        path = cfg.save(tmp_path / type(cfg).__name__)
        assert type(cfg).load(path) == cfg
        assert json.loads(path.read_text()) == cfg.to_dict()


def test_config_rejects_unknown_missing_and_invalid_keys():
    data = KronosConfig().to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['n_layer'\]"):
        KronosConfig.from_dict({**data, "n_layer": 3})
    del data["learn_te"]
    assert KronosConfig.from_dict(data).learn_te is True  # defaults fill optional keys
    with pytest.raises(ValueError, match="d_model 30 / n_heads 4"):
        KronosConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="not divisible by group_size"):
        KronosTokenizerConfig(s1_bits=3, s2_bits=3, group_size=4)
    with pytest.raises(ValueError, match="ffn_dropout_p"):
        KronosConfig(ffn_dropout_p=1.5)


def test_published_sizes_and_parameter_names():
    model = Kronos.from_config(KronosConfig())
    tok = KronosTokenizer.from_config(KronosTokenizerConfig())
    assert sum(p.numel() for p in model.parameters()) == 24_741_376  # Kronos-small
    assert round(sum(p.numel() for p in tok.parameters()) / 1e6, 2) == 3.96
    sd = model.state_dict()
    assert sd["embedding.emb_s1.weight"].shape == (1024, 512)
    assert sd["embedding.fusion_proj.weight"].shape == (512, 1024)
    assert sd["time_emb.month_embed.weight"].shape == (13, 512)
    assert sd["transformer.7.ffn.w2.weight"].shape == (512, 1024)
    assert "transformer.0.ffn.w1.bias" not in sd
    assert sd["dep_layer.cross_attn.rotary.inv_freq"].shape == (64,)  # 4 heads of 128
    assert sd["transformer.0.self_attn.rotary.inv_freq"].shape == (32,)
    assert sd["head.proj_s2.bias"].shape == (1024,)
    tsd = tok.state_dict()
    assert not any(k.startswith("encoder.3.") for k in tsd)  # n_enc_layers - 1 blocks
    assert any(k.startswith("encoder.2.") for k in tsd)
    assert tsd["tokenizer.bsq.basis"].tolist() == [2 ** i for i in range(19, -1, -1)]
    assert tsd["tokenizer.bsq.group_basis"].tolist() == [8, 4, 2, 1]
    assert tsd["post_quant_embed_pre.weight"].shape == (256, 10)


def test_fixed_time_embedding_is_sinusoidal_and_named_emb():
    model = Kronos.from_config(KronosConfig(d_model=32, n_heads=2, n_layers=1, ff_dim=64,
                                            learn_te=False))
    table = model.state_dict()["time_emb.hour_embed.emb.weight"]
    pos, j = 5, 3
    angle = pos * math.exp(-2 * j * math.log(10000.0) / 32)
    assert abs(table[pos, 2 * j].item() - math.sin(angle)) < 1e-6
    assert abs(table[pos, 2 * j + 1].item() - math.cos(angle)) < 1e-6
    assert not model.time_emb.hour_embed.emb.weight.requires_grad


def _outputs(tok, model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 6, generator=gen)
    stamp = torch.stack([torch.randint(0, n, (2, 9), generator=gen)
                         for n in (60, 24, 7, 32, 13)], dim=-1).float()
    s1, s2 = tok.encode(x, half=True)
    logits, h = model.decode_s1(s1, s2, stamp)
    return s1, s2, tok.decode((s1, s2), half=True), logits, model.decode_s2(h, s1)


def test_save_load_round_trip_gives_identical_outputs(tiny_dirs):
    tok, model = tiny_pair(0)
    tok2 = KronosTokenizer.from_pretrained(tiny_dirs[0])
    model2 = Kronos.from_pretrained(tiny_dirs[1])
    for a, b in zip(_outputs(tok, model), _outputs(tok2, model2), strict=True):
        assert torch.equal(a, b)
    assert not model2.training and not tok2.training


def _tamper(src, dst, edit):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_strict_load_fails_on_renamed_key(tiny_dirs, tmp_path):
    def rename(state):
        state["transformer.0.norm1.scale"] = state.pop("transformer.0.norm1.weight")

    bad = _tamper(tiny_dirs[1], tmp_path / "renamed", rename)
    with pytest.raises(CheckpointMismatchError) as err:
        Kronos.from_pretrained(bad)
    assert "missing keys ['transformer.0.norm1.weight']" in str(err.value)
    assert "unexpected keys ['transformer.0.norm1.scale']" in str(err.value)


def test_strict_load_fails_on_wrong_shape(tiny_dirs, tmp_path):
    def reshape(state):
        state["embed.weight"] = torch.zeros(16, 5)

    bad = _tamper(tiny_dirs[0], tmp_path / "shape", reshape)
    with pytest.raises(CheckpointMismatchError, match=r"embed.weight: checkpoint \(16, 5\) "
                                                      r"vs model \(16, 6\)"):
        KronosTokenizer.from_pretrained(bad)


def test_missing_files_and_bad_ids_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        Kronos.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a Hub id"):
        Kronos.from_pretrained(tmp_path / "does" / "not" / "exist")


def test_hub_id_passes_options_to_huggingface_hub(tiny_dirs, monkeypatch):
    calls = []

    def fake_download(*, repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(tiny_dirs[1] / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    model = Kronos.from_pretrained("NeoQuasar/Kronos-small", revision="abc123",
                                   cache_dir="/tmp/hf", force_download=True)
    assert isinstance(model, Kronos)
    assert [c[1] for c in calls] == ["config.json", "model.safetensors"]
    assert all(c[0] == "NeoQuasar/Kronos-small" for c in calls)
    assert calls[0][2]["revision"] == "abc123" and calls[0][2]["cache_dir"] == "/tmp/hf"
    assert calls[0][2]["force_download"] is True


def test_dropout_is_off_in_inference_even_if_built_with_it():
    tok, model = tiny_pair(0)
    assert model.config.ffn_dropout_p > 0 and model.config.attn_dropout_p > 0
    first = _outputs(tok, model)
    second = _outputs(tok, model)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
