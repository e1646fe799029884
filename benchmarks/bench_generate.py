"""Cached generation engine vs the full-window recompute reference (issue 3).

Builds Kronos-small-sized random weights (seeded: d_model 512, 8 layers, 24.7M parameters;
tokenizer at its default size), then for each case runs the reference
(:func:`kronos_quant.testing.recompute_generate`, which re-runs the whole window for every bar)
and the cached engine on the same inputs and the same random stream, alternating, in one
process. Prints a markdown table and, for the non-exact modes (fast sliding, autocast), their
measured effect on forecasts.

    python benchmarks/bench_generate.py                      # everything (minutes)
    python benchmarks/bench_generate.py --cases ctx128 --repeats 3
    python benchmarks/bench_generate.py --skip-reference --cases universe
    python benchmarks/bench_generate.py --device cuda --amp bf16
    python benchmarks/bench_generate.py --steps static --skip-reference      # static step, CPU
    python benchmarks/bench_generate.py --device cuda --steps static,graphs  # CUDA graphs

Random weights give near-uniform token distributions, so the forecast-effect numbers show how
much fast mode moves Monte Carlo summaries of *this* model, not of a trained checkpoint.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kronos_quant import generation
from kronos_quant.assets import embedded_demo
from kronos_quant.config import KronosConfig, KronosTokenizerConfig
from kronos_quant.data import synthetic_ohlcv
from kronos_quant.generation import SamplingParams
from kronos_quant.inputs import prepare_series
from kronos_quant.model import Kronos
from kronos_quant.predictor import KronosPredictor
from kronos_quant.testing import recompute_generate
from kronos_quant.tokenizer import KronosTokenizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "a_share_5min_sample.csv"
MAX_CONTEXT = 512
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Case:
    name: str
    ctx: int
    pred: int
    paths: int
    series: int = 1
    fast: bool = False  # also time the fast sliding mode (the window slides in this case)

    @property
    def label(self) -> str:
        who = f"{self.series} series × " if self.series > 1 else ""
        return f"ctx {self.ctx} / pred {self.pred} / {who}{self.paths} paths"


CASES = {c.name: c for c in [
    Case("ctx400", 400, 120, 8, fast=True),
    Case("ctx128", 128, 16, 4),
    Case("slide512", 512, 48, 8, fast=True),
    Case("universe", 90, 10, 8, series=64),
]}


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak, else resident set size sampled from
    /proc/self/statm every 5 ms (falls back to the process-lifetime ru_maxrss)."""

    def __init__(self, device: torch.device):
        self.device, self.start_mb, self.peak_mb = device, 0.0, 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss_mb() -> float:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except OSError:  # not Linux: lifetime peak (KiB on Linux/BSD, bytes on macOS)
            scale = 1 if platform.system() == "Darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start_mb = self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss_mb())


class SlideTimer:
    """Time spent in the engine's window re-prefills (every prefill after the first) of the
    generation module ``module`` (this tree's or a baseline's)."""

    def __init__(self, device: torch.device, module=generation):
        self.device, self.module, self.seconds, self.count = device, module, 0.0, 0

    def __enter__(self) -> SlideTimer:
        # This tree's decoder class is static_decode.Decoder (generation imports it); older
        # commits defined generation._Decoder.
        self._cls = getattr(self.module, "_Decoder", None) or self.module.Decoder
        self._original = original = self._cls.prefill
        calls = {"n": 0}

        def timed(dec, start):
            calls["n"] += 1
            if calls["n"] == 1:
                return original(dec, start)
            t0 = _now(self.device)
            out = original(dec, start)
            self.seconds += _now(self.device) - t0
            self.count += 1
            return out

        self._cls.prefill = timed
        return self

    def __exit__(self, *exc) -> None:
        self._cls.prefill = self._original


# Wall clock by default; --clock cpu swaps in this process's CPU time (all its threads), which
# on a shared machine does not count the time other jobs hold the cores (use with --threads 1).
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCK["wall"]


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _clock()


def build_models(seed: int, device: torch.device) -> tuple[KronosTokenizer, Kronos]:
    """Kronos-small-sized tokenizer and predictor with seeded random weights."""
    torch.manual_seed(seed)  # the modules' own initialisers draw from the global stream
    tok = KronosTokenizer.from_config(KronosTokenizerConfig()).eval().to(device)
    model = Kronos.from_config(KronosConfig()).eval().to(device)
    return tok, model


def baseline_engine(rev: str, models, workdir: Path):
    """The generation module of commit ``rev`` (its ``kronos_quant`` exported with
    ``git archive`` and imported as the package ``kq_baseline``) and copies of ``models`` built
    by its classes with the same weights, so that old and new engines alternate in one
    process."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "kronos_quant"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    (workdir / "kronos_quant").rename(workdir / "kq_baseline")
    sys.path.insert(0, str(workdir))
    old_tok = importlib.import_module("kq_baseline.tokenizer").KronosTokenizer
    old_model = importlib.import_module("kq_baseline.model").Kronos
    tok, model = models
    copies = (old_tok.from_config(tok.config), old_model.from_config(model.config))
    for new, old in zip(models, copies, strict=True):
        old.load_state_dict(new.state_dict())
        old.eval().to(next(new.parameters()).device)
    return importlib.import_module("kq_baseline.generation"), copies


def case_inputs(case: Case, seed: int, device: torch.device):
    """Normalised synthetic 5-minute bars for every series: x (B, L, 6), stamps (B, ·, 5)."""
    prepared = [prepare_series(synthetic_ohlcv(case.ctx, seed=seed + i), pred_len=case.pred)
                for i in range(case.series)]

    def stack(field: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(p, field) for p in prepared])).to(device)

    return stack("x"), stack("x_stamp"), stack("y_stamp")


def window_sum(ctx: int, pred: int) -> int:
    """Tokens the reference runs per path over a whole generation (its cost model)."""
    return sum(min(MAX_CONTEXT, ctx + i) for i in range(pred))


def release_freed_memory() -> None:
    """Hand memory freed by earlier runs back to the OS (glibc), so that each run's RSS
    increase is its own working set rather than reuse of what an earlier run left mapped."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def timed_run(fn, device: torch.device) -> tuple[float, tuple[float, float], object]:
    """Seconds, (peak MiB, peak increase over the start MiB) and the result of ``fn()``."""
    release_freed_memory()
    with PeakMemory(device) as mem:
        t0 = _now(device)
        out = fn()
        seconds = _now(device) - t0
    return seconds, (mem.peak_mb, mem.peak_mb - mem.start_mb), out


def case_runners(case: Case, args, models, inputs) -> dict[str, tuple]:
    """Mode name → (callable(generator) returning bars, bars it generates, generation module)
    per timed mode."""
    tok, model = models
    x, xs, ys = inputs
    sampling = SamplingParams(sample_count=case.paths)
    amp = AMP[args.amp]
    tag = "" if amp is None else f" +{args.amp}"

    def engine(slide_block: int, amp_dtype, module=generation, pair=models, **step):
        return lambda g: module.generate(pair[1], pair[0], x, xs, ys, pred_len=case.pred,
                                         max_context=MAX_CONTEXT, sampling=sampling,
                                         generator=g, slide_block=slide_block,
                                         amp_dtype=amp_dtype, **step).bars

    runners = {}
    if not args.skip_reference and case.name in args.reference_cases:
        ref_pred = min(args.estimate_reference_bars or case.pred, case.pred)
        runners["reference"] = (lambda g: recompute_generate(
            model, tok, x, xs, ys[:, :ref_pred], pred_len=ref_pred, max_context=MAX_CONTEXT,
            sampling=sampling, generator=g), ref_pred, generation)
    if args.baseline_engine is not None:  # the same mode with the engine of another commit
        old, old_models = args.baseline_engine
        runners[f"exact{tag} ({args.baseline})"] = (engine(1, amp, old, old_models), case.pred,
                                                  old)
    runners["exact" + tag] = (engine(1, amp), case.pred, generation)
    # The step is named explicitly: "exact" is whatever this tree's default is.
    if "static" in args.steps:
        runners["exact static" + tag] = (engine(1, amp, static_step=True, cuda_graphs=False),
                                         case.pred, generation)
    if "graphs" in args.steps:
        runners["exact graphs" + tag] = (engine(1, amp, cuda_graphs=True), case.pred, generation)
    if case.fast:
        for k in args.slide_blocks:
            runners[f"fast k={k}{tag}"] = (engine(k, amp), case.pred, generation)
    return runners


def run_case(case: Case, args, models, device) -> list[dict]:
    """Alternate the modes ``args.repeats`` times; median seconds and max peak per mode."""
    inputs = case_inputs(case, args.seed, device)
    runners = case_runners(case, args, models, inputs)
    times = {m: [] for m in runners}
    peaks = {m: (0.0, 0.0) for m in runners}
    slides = {m: (0.0, 0) for m in runners}
    outputs = {}
    for _ in range(args.repeats):
        for mode, (fn, _, module) in runners.items():
            gen = torch.Generator(device=device).manual_seed(args.seed)
            with SlideTimer(device, module) as st:
                seconds, peak, outputs[mode] = timed_run(lambda fn=fn, gen=gen: fn(gen), device)
            times[mode].append(seconds)
            peaks[mode] = max(peaks[mode], peak)  # the run with the highest peak
            slides[mode] = (st.seconds, st.count)
    rows = []
    ref = outputs.get("reference")
    for mode, (_fn, pred, _) in runners.items():
        seconds = float(np.median(times[mode]))
        estimate = pred < case.pred
        if estimate:  # scale by the tokens the reference would have run for all bars
            seconds *= window_sum(case.ctx, case.pred) / window_sum(case.ctx, pred)
        diff = None
        if mode != "reference" and ref is not None and ref.shape == outputs[mode].shape:
            diff = float((outputs[mode].float() - ref.float()).abs().max())
        rows.append(dict(case=case, mode=mode, seconds=seconds, peak=peaks[mode],
                         estimate=estimate, slide=slides[mode], diff=diff))
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("| case | mode | seconds | bars/s | speed-up | series/min | in re-prefills "
            "| peak RSS MiB (+run) | max abs Δ vs ref |")
    lines = [head, "|" + "---|" * 9]
    ref = {r["case"].name: r["seconds"] for r in rows if r["mode"] == "reference"}
    estimated = {r["case"].name: r["estimate"] for r in rows if r["mode"] == "reference"}
    for r in rows:
        c, s = r["case"], r["seconds"]
        bars = c.pred * c.paths * c.series / s
        speed = f"{ref[c.name] / s:.1f}×" if c.name in ref and r["mode"] != "reference" else ""
        speed += " (est.)" if speed and estimated.get(c.name) else ""
        slide_s, n_slides = r["slide"]
        slide = f"{slide_s / s:.0%} ({n_slides})" if n_slides else "–"
        per_min = f"{c.series * 60 / s:,.0f}" if c.series > 1 else ""
        secs = f"{s:.2f}" + (" (estimate)" if r["estimate"] else "")
        diff = "" if r["diff"] is None else f"{r['diff']:.1e}"
        lines.append(f"| {c.label} | {r['mode']} | {secs} | {bars:,.0f} | {speed} | {per_min} "
                     f"| {slide if r['mode'] != 'reference' else '–'} "
                     f"| {r['peak'][0]:,.0f} (+{r['peak'][1]:,.0f}) "
                     f"| {diff} |")
    return "\n".join(lines)


# -- effect of the non-exact modes on forecasts -----------------------------------------------
def effect_datasets(args) -> list[tuple[str, pd.DataFrame]]:
    """The shared A-share 5-minute sample (when present) and a synthetic series."""
    out = []
    if args.sample_csv.is_file():
        df = pd.read_csv(args.sample_csv, parse_dates=["timestamps"]).set_index("timestamps")
        out.append(("A-share 5min sample", df))
    else:
        print(f"(A-share sample {args.sample_csv} not found: skipped)")
    out.append(("synthetic 5min", synthetic_ohlcv(2500, seed=args.seed + 100)))
    return out


def close_summary(predictor: KronosPredictor, df: pd.DataFrame, case: Case, paths: int,
                  seed: int) -> np.ndarray:
    """Mean and 10/50/90% quantiles of the forecast close path relative to the last close,
    (4, P)."""
    fc = predictor.forecast(df, pred_len=case.pred, sample_count=paths, seed=seed)
    close = fc.column_paths("close") / float(fc.last["close"])  # (S, P)
    return np.vstack([close.mean(axis=0), np.quantile(close, [0.1, 0.5, 0.9], axis=0)])


def effect_modes(args) -> dict[str, dict]:
    """The non-exact modes timed above, plus exact mode with another seed (noise floor)."""
    amp = AMP[args.amp]
    tag = "" if amp is None else f" +{args.amp}"
    modes = {"exact, other seed": dict(slide_block=1, seed_shift=1)}
    if amp is not None:
        modes["exact" + tag] = dict(slide_block=1, seed_shift=0, amp=amp)
    modes |= {f"fast k={k}{tag}": dict(slide_block=k, seed_shift=0, amp=amp)
              for k in args.slide_blocks}
    return modes


def effect_rows(args, models, device, *, datasets, cases, max_context) -> list[dict]:
    """Per dataset, case and mode: |Δ| of mean/quantiles vs exact mode, in basis points of
    the price level, averaged over horizon bars and windows."""
    tok, model = models
    rows = []
    for data_name, df in datasets:
        for case in cases:
            ends = np.linspace(case.ctx, len(df), args.effect_windows + 1)[1:].astype(int)
            windows = [df.iloc[e - case.ctx:e] for e in ends]
            exact_pred = KronosPredictor(model, tok, device=device, max_context=max_context)
            exact = [close_summary(exact_pred, w, case, args.effect_paths, args.seed)
                     for w in windows]
            for mode, cfg in effect_modes(args).items():
                pred = KronosPredictor(model, tok, device=device, max_context=max_context,
                                       slide_block=cfg["slide_block"], amp_dtype=cfg.get("amp"))
                diffs = np.stack([np.abs(close_summary(pred, w, case, args.effect_paths,
                                                       args.seed + cfg["seed_shift"]) - e)
                                  for w, e in zip(windows, exact, strict=True)])
                diffs = diffs * 1e4  # (W, 4, P) bp
                rows.append(dict(data=data_name, case=case, mode=mode, windows=len(windows),
                                 mean=diffs.mean(axis=(0, 2)), max=diffs.max()))
    return rows


def demo_effect_rows(args, device) -> list[dict]:
    """The same study with the embedded *trained* demo pair (mini preset, trained on 120-bar
    windows), max_context = its training window, on its own daily series and the datasets
    above; skipped when the assets are absent."""
    assets = embedded_demo()
    if assets is None:
        print("(embedded demo model not found: trained-model effect study skipped)")
        return []
    models = (KronosTokenizer.from_pretrained(str(assets.tokenizer_dir)).to(device),
              Kronos.from_pretrained(str(assets.model_dir)).to(device))
    series = pd.read_csv(assets.series_path, index_col="timestamps", parse_dates=True)
    datasets = [(assets.series_name, series)] + effect_datasets(args)
    case = Case("demo", assets.lookback, 24, args.effect_paths, fast=True)
    return effect_rows(args, models, device, datasets=datasets, cases=[case],
                       max_context=assets.lookback)


def format_effects(rows: list[dict], paths: int) -> str:
    lines = [f"| data | window | mode vs exact fp32 ({paths} paths) | Δ mean bp | Δ q10 bp "
             "| Δ q50 bp | Δ q90 bp | max Δ bp |", "|" + "---|" * 8]
    for r in rows:
        m = " | ".join(f"{v:.1f}" for v in r["mean"])
        case = f"ctx {r['case'].ctx} / pred {r['case'].pred}"
        lines.append(f"| {r['data']} ({r['windows']} windows) | {case} | {r['mode']} "
                     f"| {m} | {r['max']:.1f} |")
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds (median taken)")
    p.add_argument("--skip-reference", action="store_true", help="time the engine only")
    p.add_argument("--reference-cases", default="",
                   help="time the reference only for these cases (comma-separated; default all)")
    p.add_argument("--estimate-reference-bars", type=int, default=0, metavar="N",
                   help="time the reference for only N bars and scale to all bars by the "
                        "tokens it runs (labelled an estimate); 0 measures it for real")
    p.add_argument("--baseline", metavar="REV", default="",
                   help="also time exact mode with the engine of commit REV (before/after)")
    p.add_argument("--steps", default="",
                   help="also time exact mode with these decode steps: static (static-shape "
                        "step, no graphs), graphs (CUDA graphs over it; CUDA only); "
                        "comma-separated")
    p.add_argument("--slide-blocks", default="16", help="fast-mode k values, comma-separated")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=sorted(AMP), default="none",
                   help="autocast dtype for the engine (not exact; effect is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                   help="cpu: time by this process's CPU time (shared machines, with --threads "
                        "1; CPU device only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-effect", action="store_true", help="skip the forecast-effect study")
    p.add_argument("--skip-demo", action="store_true",
                   help="skip the effect study with the embedded trained demo model")
    p.add_argument("--effect-windows", type=int, default=3, help="context windows per dataset")
    p.add_argument("--effect-paths", type=int, default=16, help="sample paths per forecast")
    p.add_argument("--sample-csv", type=Path, default=DEFAULT_SAMPLE)
    args = p.parse_args(argv)
    unknown = sorted(set(args.cases.split(",")) - set(CASES))
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    args.cases = [CASES[c] for c in args.cases.split(",")]
    args.reference_cases = (set(args.reference_cases.split(",")) if args.reference_cases
                            else {c.name for c in args.cases})
    args.slide_blocks = [int(k) for k in args.slide_blocks.split(",")]
    if args.clock == "cpu" and args.device != "cpu":
        p.error("--clock cpu times CPU runs only")
    args.steps = {m for m in args.steps.split(",") if m}
    if args.steps - {"static", "graphs"}:
        p.error(f"unknown --steps {sorted(args.steps - {'static', 'graphs'})}; "
                "choose from static, graphs")
    if "graphs" in args.steps and args.device == "cpu":
        p.error("--steps graphs needs --device cuda")
    return args


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        return f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                 .splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op threads")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCK[args.clock]
    device = torch.device(args.device)
    models = build_models(args.seed, device)
    args.baseline_engine = None
    workdir = tempfile.TemporaryDirectory(prefix="bench_generate_")
    if args.baseline:
        args.baseline_engine = baseline_engine(args.baseline, models, Path(workdir.name))
    n_params = sum(p.numel() for p in models[1].parameters())
    print(f"{machine_line(device)}; {args.clock} clock; predictor {n_params / 1e6:.1f}M "
          f"parameters (random, seed {args.seed}); max_context {MAX_CONTEXT}; top_p 0.9, T 1")
    rows = []
    for case in args.cases:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        case_rows = run_case(case, args, models, device)
        rows += case_rows
        end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"  {case.label}: done (load average {load:.2f} at start, {end:.2f} at end)",
              flush=True)
    print()
    print(format_table(rows))
    if not args.skip_effect and any(c.fast for c in args.cases):
        rows = effect_rows(args, models, device, datasets=effect_datasets(args),
                           cases=[c for c in args.cases if c.fast], max_context=MAX_CONTEXT)
        print(f"\nForecast effect, random Kronos-small weights, max_context {MAX_CONTEXT}:")
        print(format_effects(rows, args.effect_paths))
    if not args.skip_effect and not args.skip_demo:
        print("\nForecast effect, embedded trained demo model (kronos_quant/assets/demo):")
        print(format_effects(demo_effect_rows(args, device), args.effect_paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
