"""Every example runs offline, as a user would start it, at a small size.

Each script is executed as ``__main__`` (``runpy``) with its own command-line options set to
small sizes, in this process so the heavy imports are paid once; outputs go to a temporary
folder and are checked. An example added to ``examples/`` without a case here fails
:func:`test_every_example_has_a_case`.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

from kronos_quant.assets import ASSETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODEL = ["--model", str(ASSETS / "model"), "--tokenizer", str(ASSETS / "tokenizer")]

# script: (options, files it must write under the output folder, text it must print)
CASES: dict[str, tuple[list[str], list[str], str]] = {
    "prediction.py": (["--pred-len", "4", "--samples", "2", "--out", "{out}"],
                      ["prediction.png"], "inside the 10–90% band"),
    "prediction.py --no-volume": (["--no-volume", "--pred-len", "4", "--samples", "2",
                                   "--out", "{out}"], ["prediction.png"], "median close MAE"),
    "prediction_batch.py": (["--pred-len", "2", "--samples", "2"], [], "median at horizon"),
    "paths_quantiles.py": (["--pred-len", "3", "--samples", "4", "--out", "{out}"],
                           ["paths.csv", "paths.npy"], "P(any close below"),
    "forecast_published.py": ([str(ASSETS / "series.csv"), *MODEL, "--lookback", "60",
                               "--pred-len", "3", "--samples", "2", "--out", "{out}/fan.png"],
                              ["fan.png"], "P(up)"),
    "universe_signals.py": (["--lookback", "30", "--pred-len", "2", "--samples", "2",
                             "--freq", "40"], [], "random_walk"),
    "vectorbt_topk.py": (["--instruments", "4", "--bars", "90", "--lookback", "30",
                          "--samples", "2", "--freq", "10", "--topk", "2", "--out", "{out}"],
                         ["tearsheet.html"], "Total Return"),
    "backtrader_strategy.py": (["--instruments", "3", "--bars", "70", "--lookback", "30",
                                "--samples", "2", "--rebalance", "10", "--out", "{out}"],
                               ["backtrader.png"], "final value"),
    "live_paper.py": (["--candles", "3", "--samples", "16", "--out", "{out}"],
                      ["tearsheet.html"], "decisions: "),
    "live_replay.py": (["--candles", "3", "--samples", "2", "--out", "{out}"],
                       ["tearsheet.html", "state/ledger.sqlite"], "decisions: 6"),
    "finetune_csv.py": (["--steps", "1", "--batch-size", "4", "--lookback", "30",
                         "--pred-len", "4", "--out", "{out}"],
                        ["forecast.png", "predictor/best/model.safetensors"], "predictor: 1 steps"),
}
# Run end to end by another test file (qrun needs its own process and a provider directory).
ELSEWHERE = {"qlib_workflow.yaml": "tests/test_adapter_qlib_workflow.py"}


def test_every_example_has_a_case():
    scripts = {p.name for p in EXAMPLES.iterdir() if p.is_file() and not p.name.startswith(".")}
    covered = {case.split()[0] for case in CASES} | set(ELSEWHERE)
    assert scripts == covered, f"examples without a test case: {sorted(scripts - covered)}"
    for name, test in ELSEWHERE.items():
        assert name in (EXAMPLES.parent / test).read_text()


@pytest.mark.parametrize("case", list(CASES))
def test_example_runs(case, tmp_path, monkeypatch, capsys):
    options, files, printed = CASES[case]
    script = EXAMPLES / case.split()[0]
    argv = [opt.replace("{out}", str(tmp_path)) for opt in options]
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    monkeypatch.chdir(tmp_path)  # anything written without --out stays in the temporary folder
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert printed in out, out[-2000:]
    for name in files:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, f"{case} did not write {name}"


def test_paths_example_writes_every_path(tmp_path, monkeypatch, capsys):
    script = EXAMPLES / "paths_quantiles.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--pred-len", "3", "--samples", "5",
                                      "--out", str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    paths = pd.read_csv(tmp_path / "paths.csv")
    assert len(paths) == 5 * 3 and sorted(paths["sample"].unique()) == list(range(5))
