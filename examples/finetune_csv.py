"""Finetune Kronos on your own CSV of bars, then forecast with the result.

Runs offline: it writes the bundled universe (AAPL, GOOG, IBM, MSFT, daily) to a long CSV,
finetunes the embedded demo model's tokenizer and then its predictor on that CSV (a few
optimizer steps by default — raise ``--steps`` or set ``--epochs`` for a real run), and
forecasts with the finetuned pair::

    python examples/finetune_csv.py --steps 20 --out finetune_out
    python examples/finetune_csv.py --csv my_bars.csv --init-model NeoQuasar/Kronos-small \
        --init-tokenizer NeoQuasar/Kronos-Tokenizer-base --epochs 3 --steps 0

The CSV is long format: ``datetime`` (or ``timestamps``/``date``), ``instrument`` (or
``symbol``/``ticker``), open, high, low, close, volume[, amount]. The same runs from the
shell: ``kronos-quant finetune tokenizer|predictor --data my_bars.csv ...`` (docs/finetune.md).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from kronos_quant import KronosPredictor
from kronos_quant.assets import ASSETS, UNIVERSE
from kronos_quant.data import load_panel, panel_to_frames
from kronos_quant.finetune import FinetuneConfig, Trainer


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(UNIVERSE), help="long CSV of bars")
    parser.add_argument("--init-model", default=str(ASSETS / "model"))
    parser.add_argument("--init-tokenizer", default=str(ASSETS / "tokenizer"))
    parser.add_argument("--lookback", type=int, default=60)
    parser.add_argument("--pred-len", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per model (0: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--out", default="finetune_out")
    args = parser.parse_args(argv)

    out = Path(args.out)
    common = dict(data=args.csv, lookback=args.lookback, pred_len=args.pred_len,
                  epochs=args.epochs, max_steps=args.steps or None, batch_size=args.batch_size,
                  lr=args.lr, val_fraction=0.2, embargo=args.pred_len, val_windows=128,
                  tensorboard=False, progress=False, device="cpu")
    tokenizer_run = Trainer(FinetuneConfig(task="tokenizer", init=args.init_tokenizer,
                                           out_dir=str(out / "tokenizer"), **common)).fit()
    print(f"tokenizer: {tokenizer_run.step} steps, validation {tokenizer_run.last_val}")
    predictor_run = Trainer(FinetuneConfig(task="predictor", init=args.init_model,
                                           tokenizer=str(tokenizer_run.run_dir / "best"),
                                           out_dir=str(out / "predictor"), **common)).fit()
    print(f"predictor: {predictor_run.step} steps, validation {predictor_run.last_val}")

    # Predictor runs keep a copy of the tokenizer they were trained with.
    run = predictor_run.run_dir
    predictor = KronosPredictor.from_pretrained(str(run / "best"), str(run / "tokenizer"),
                                                device="cpu")
    name, bars = next(iter(panel_to_frames(load_panel(args.csv)).items()))
    fc = predictor.forecast(bars.iloc[-args.lookback:], pred_len=args.pred_len, sample_count=16,
                            seed=0, name=name)
    chart = out / "forecast.png"
    fc.plot(chart, model_label=f"finetuned from {Path(args.init_model).name} "
                               f"on {Path(args.csv).name}")
    print(f"{name}: median close at the horizon {fc.median()['close'].iloc[-1]:.2f}; wrote {chart}")
    return chart


if __name__ == "__main__":
    main()
