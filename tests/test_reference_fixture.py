"""Our classes against numbers produced by the reference implementation itself.

``tests/data/reference-tiny`` holds a tiny random-weight tokenizer and predictor saved in the
Hub format by upstream Kronos (commit 67b630e), the bars they were run on and the reference's
outputs (``expected.json``): tokens and decoded bars of rows 0–100, and ``predict`` results,
greedy and seeded-sampled, each with its settings. Every expected value was computed by the
reference (torch 2.13.0, CPU); the only part of it stated here is which random draws it makes
(one torch.multinomial for s1, then one for s2, per generated bar, greedy included).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from kronos_quant import KronosPredictor
from kronos_quant.generation import SamplingParams, sample_tokens
from kronos_quant.inputs import BAR_COLUMNS, prepare_series
from kronos_quant.model import Kronos
from kronos_quant.testing import recompute_generate
from kronos_quant.tokenizer import KronosTokenizer

FIXTURE = Path(__file__).parent / "data" / "reference-tiny"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
CASES = {case["name"]: case for case in EXPECTED["predict"]}
TOLERANCE = 1e-3  # forecasts: in units of the context's standard deviation, per column


@pytest.fixture(scope="module")
def tokenizer() -> KronosTokenizer:
    return KronosTokenizer.from_pretrained(FIXTURE / "tokenizer")


@pytest.fixture(scope="module")
def model() -> Kronos:
    return Kronos.from_pretrained(FIXTURE / "model")


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_csv(FIXTURE / "bars.csv", parse_dates=["timestamps"])


def _window(bars: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    return bars.iloc[rows[0]:rows[1]].reset_index(drop=True)


def _predict(model: Kronos, tokenizer: KronosTokenizer, bars: pd.DataFrame,
             case: dict) -> pd.DataFrame:
    """Our ``predict`` called exactly as the reference was for ``case``."""
    predictor = KronosPredictor(model, tokenizer, device="cpu", max_context=case["max_context"],
                                clip=5)
    context, future = _window(bars, case["context_rows"]), _window(bars, case["future_rows"])
    return predictor.predict(context[list(BAR_COLUMNS)], x_timestamp=context["timestamps"],
                             y_timestamp=future["timestamps"], pred_len=case["pred_len"],
                             T=case["T"], top_k=case["top_k"], top_p=case["top_p"],
                             sample_count=case["sample_count"], verbose=False)


@pytest.mark.parametrize("part", ["tokenizer", "model"])
def test_every_saved_tensor_is_loaded_unchanged(part, tokenizer, model):
    saved = load_file(FIXTURE / part / "model.safetensors")
    state = (tokenizer if part == "tokenizer" else model).state_dict()
    assert sorted(state) == sorted(saved)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name


def test_tokens_and_decoded_bars_match_the_reference(tokenizer, bars):
    ref = EXPECTED["tokens"]
    rows = _window(bars, ref["rows"])
    prepared = prepare_series(rows[list(BAR_COLUMNS)], pred_len=1,
                              x_timestamp=rows["timestamps"],
                              y_timestamp=bars["timestamps"].iloc[ref["rows"][1]:][:1], clip=5)
    with torch.inference_mode():
        s1, s2 = tokenizer.encode(torch.from_numpy(prepared.x)[None], half=True)  # (1, L) each
        decoded = tokenizer.decode((s1, s2), half=True)[0]  # (L, 6)
    assert s1[0].tolist() == ref["s1"]
    assert s2[0].tolist() == ref["s2"]
    np.testing.assert_allclose(decoded.numpy(), np.array(ref["decoded"]), rtol=0, atol=1e-5)


def _assert_matches(got: np.ndarray, case: dict, bars: pd.DataFrame) -> None:
    """Forecast (pred_len, 6) within TOLERANCE context standard deviations of the reference."""
    scale = _window(bars, case["context_rows"])[list(BAR_COLUMNS)].to_numpy(np.float64).std(axis=0)
    error = np.abs(got.astype(np.float64) - np.array(case["expected"])) / scale  # (P, 6)
    worst = BAR_COLUMNS[int(error.max(axis=0).argmax())]
    assert error.max() < TOLERANCE, f"max error {error.max():.2e} std in column {worst}"


@pytest.mark.parametrize("name", list(CASES))
def test_predict_matches_the_reference(name, model, tokenizer, bars):
    case = CASES[name]
    if case["torch_manual_seed"] is not None:
        torch.manual_seed(case["torch_manual_seed"])
    got = _predict(model, tokenizer, bars, case)
    assert list(got.columns) == list(BAR_COLUMNS)
    assert list(got.index) == list(_window(bars, case["future_rows"])["timestamps"])
    _assert_matches(got.to_numpy(), case, bars)


@pytest.mark.parametrize("name", list(CASES))
def test_the_recompute_yardstick_matches_the_reference(name, model, tokenizer, bars):
    """``recompute_generate``, which the engine's tests compare against, is itself held to the
    reference: a bug shared by the engine and its yardstick cannot hide."""
    case = CASES[name]
    context, future = _window(bars, case["context_rows"]), _window(bars, case["future_rows"])
    prepared = prepare_series(context[list(BAR_COLUMNS)], pred_len=case["pred_len"],
                              x_timestamp=context["timestamps"],
                              y_timestamp=future["timestamps"], clip=5)
    sampling = SamplingParams(T=case["T"], top_k=case["top_k"], top_p=case["top_p"],
                              sample_count=case["sample_count"])
    if case["torch_manual_seed"] is not None:
        torch.manual_seed(case["torch_manual_seed"])
    paths = recompute_generate(
        model, tokenizer, torch.from_numpy(prepared.x)[None],
        torch.from_numpy(prepared.x_stamp)[None], torch.from_numpy(prepared.y_stamp)[None],
        pred_len=case["pred_len"], max_context=case["max_context"],
        sampling=sampling)  # (1, S, P, 6)
    _assert_matches(prepared.denormalise(paths[0].mean(dim=0).numpy()), case, bars)


def _reference_draws(case: dict, model: Kronos) -> None:
    """The global-RNG calls the reference's predict makes for ``case``: per generated bar one
    torch.multinomial over all paths for s1, then one for s2, greedy included."""
    rows = case["sample_count"]  # one series
    uniform_s1 = torch.full((rows, 2 ** model.s1_bits), 1.0)
    uniform_s2 = torch.full((rows, 2 ** model.s2_bits), 1.0)
    for _ in range(case["pred_len"]):
        torch.multinomial(uniform_s1, 1)
        torch.multinomial(uniform_s2, 1)


@pytest.mark.parametrize("name", list(CASES))
def test_predict_leaves_the_global_stream_where_the_reference_does(name, model, tokenizer,
                                                                   bars):
    case = CASES[name]
    seed = case["torch_manual_seed"] or 0
    torch.manual_seed(seed)
    _reference_draws(case, model)
    want = torch.get_rng_state()
    torch.manual_seed(seed)
    _predict(model, tokenizer, bars, case)
    assert torch.equal(torch.get_rng_state(), want)
    torch.manual_seed(seed)
    assert not torch.equal(torch.get_rng_state(), want)  # the check can tell streams apart


def test_unseeded_calls_after_greedy_follow_the_reference_stream(model, tokenizer, bars):
    """A sampled predict run after a greedy one, one seed for both, gives what it gives when
    the greedy call is replaced by the reference's own draws."""
    greedy, sampled = CASES["greedy_short"], CASES["sampled_top_p"]
    torch.manual_seed(sampled["torch_manual_seed"])
    _reference_draws(greedy, model)
    want = _predict(model, tokenizer, bars, sampled)
    torch.manual_seed(sampled["torch_manual_seed"])
    _predict(model, tokenizer, bars, greedy)
    got = _predict(model, tokenizer, bars, sampled)
    pd.testing.assert_frame_equal(got, want)
    # And the stream matters: without the greedy call's draws the sampled forecast differs.
    torch.manual_seed(sampled["torch_manual_seed"])
    assert not np.allclose(_predict(model, tokenizer, bars, sampled).to_numpy(), want.to_numpy())


def test_unseeded_greedy_breaks_ties_as_the_reference_draw_does():
    """The reference's greedy step is a multinomial draw from the top-1 filtered softmax:
    tied maxima are picked at random from the global stream, and we pick the same."""
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0],
                           [0.0, 1.0, 5.0, 1.0]]).repeat(40, 1)  # (120, 4)
    torch.manual_seed(0)
    kept = logits.masked_fill(logits < logits.amax(dim=-1, keepdim=True), float("-inf"))
    want = torch.multinomial(torch.softmax(kept, dim=-1), 1)
    state = torch.get_rng_state()
    torch.manual_seed(0)
    got = sample_tokens(logits, SamplingParams(top_k=1))
    assert torch.equal(got, want) and torch.equal(torch.get_rng_state(), state)
    assert set(got[1::3, 0].tolist()) == {0, 1, 2, 3}  # the ties were really drawn
    # A private generator leaves the global stream alone (seeded forecasts).
    private = torch.Generator().manual_seed(0)
    assert torch.equal(sample_tokens(logits, SamplingParams(top_k=1), private)[2::3],
                       torch.full((40, 1), 2))
    assert torch.equal(torch.get_rng_state(), state)
