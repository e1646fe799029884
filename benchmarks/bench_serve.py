"""Throughput and latency of ``POST /forecast`` under load, with and without batching.

Starts ``kronos-quant serve`` (embedded demo model, 127.0.0.1, a free port) in its own
process, then sends forecast requests of 120 daily bars, 10 bars ahead, 16 paths, from 1, 4
and 16 concurrent clients (each client sends its requests one after the other, every request
a different window and seed). The same is run against a server started with
``--max-batch 1`` (every request its own model call). Prints requests/s, p50/p95 latency,
the batching gain (throughput at 16 clients / one request at a time) and the server's peak
RSS (VmHWM).

    python benchmarks/bench_serve.py                     # 48 requests per level
    python benchmarks/bench_serve.py --requests 96 --threads 2
    python benchmarks/bench_serve.py --model-process     # the model in its own process
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from kronos_quant.assets import embedded_demo

CLIENTS = (1, 4, 16)
BARS, PRED_LEN, PATHS = 120, 10, 16
TARGET_GAIN, RSS_LIMIT_MB = 3.0, 1024
JSON = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, *extra: str, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kronos_quant.cli", "--quiet", "serve", "--port", str(port),
           "--threads", str(threads), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(240):  # bounded: 60 s for the model to load
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("server did not answer /health within 60 s")


def peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a process plus its children's (the model process, if any)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += peak_rss_mb(int(child))
    return total


def bodies(series: pd.DataFrame, n: int) -> list[bytes]:
    """``n`` JSON request bodies, encoded once here (as a load generator sends prepared
    bodies, so that the clients, which share this machine, spend little of it): sliding
    120-bar windows of the demo series, one seed each."""
    out = []
    for k in range(n):
        end = len(series) - (k % 50)
        window = series.iloc[end - BARS:end]
        body = {"bars": [{"timestamp": str(t), **row} for t, row in
                         zip(window.index, window.to_dict(orient="records"), strict=True)],
                "pred_len": PRED_LEN, "sample_count": PATHS, "seed": k}
        out.append(json.dumps(body).encode())
    return out


async def load(url: str, work: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Send ``work`` from ``clients`` concurrent clients; (wall seconds, latencies)."""
    queue: asyncio.Queue = asyncio.Queue()
    for body in work:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            reply = await http.post(f"{url}/forecast", content=body, headers=JSON)
            reply.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300.0, limits=limits) as http:
        await http.post(f"{url}/forecast", content=work[0], headers=JSON)  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - t0, latencies


def model_ceiling(series: pd.DataFrame, clients: int, threads: int,
                  device: str | None = None) -> float:
    """The model's own batching gain, in this process: ``clients`` windows generated one call
    each vs one call for all (the ceiling of the server's gain, which adds HTTP and JSON)."""
    import torch

    from kronos_quant.assets import demo_predictor

    torch.set_num_threads(threads)
    predictor, _ = demo_predictor(assets=embedded_demo(), device=device)
    windows = [series.iloc[len(series) - k - BARS:len(series) - k] for k in range(clients)]
    values = np.stack([w.assign(amount=w["volume"] * w[["open", "high", "low", "close"]]
                                .mean(axis=1)).to_numpy() for w in windows])
    stamps = np.stack([w.index.to_numpy("datetime64[ns]") for w in windows])
    future = stamps[:, -1:] + np.arange(1, PRED_LEN + 1) * np.timedelta64(1, "D")  # (N, P)

    def timed(idx: list[int]) -> float:
        t0 = time.perf_counter()
        predictor.forecast_arrays(values[idx], stamps[idx], future[idx], sample_count=PATHS,
                                  seed=[int(i) for i in idx])
        return time.perf_counter() - t0

    timed([0])  # warm-up
    one_by_one = sum(timed([k]) for k in range(clients))
    return one_by_one / timed(list(range(clients)))


def run(args: argparse.Namespace) -> int:
    assets = embedded_demo()
    if assets is None:
        print("the embedded demo model is missing; nothing to measure")
        return 1
    series = pd.read_csv(assets.series_path, index_col="timestamps", parse_dates=True)
    series = series[["open", "high", "low", "close", "volume"]]
    work = bodies(series, args.requests)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"server torch threads {args.threads}, device {args.device or 'auto'}"
          f"{', model in its own process' if args.model_process else ''}; "
          f"{args.requests} requests per level of "
          f"{BARS} bars, {PRED_LEN} ahead, {PATHS} paths")
    rows, rss = [], {}
    process = ("--model-process",) if args.model_process else ()
    process += ("--device", args.device) if args.device else ()
    for mode, extra in (("batched", ()), ("one per call", ("--max-batch", "1"))):
        port = free_port()
        server = start_server(port, *process, *extra, threads=args.threads)
        try:
            for clients in (CLIENTS if mode == "batched" else (1, CLIENTS[-1])):
                wall, lat = asyncio.run(load(f"http://127.0.0.1:{port}", work, clients))
                rows.append((mode, clients, len(lat) / wall, np.percentile(lat, 50) * 1e3,
                             np.percentile(lat, 95) * 1e3))
            rss[mode] = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"\n{'server':<14}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for mode, clients, rps, p50, p95 in rows:
        print(f"{mode:<14}{clients:>8}{rps:>9.1f}{p50:>9.0f}{p95:>9.0f}")
    one = next(r[2] for r in rows if r[:2] == ("batched", 1))
    top = next(r[2] for r in rows if r[:2] == ("batched", CLIENTS[-1]))
    unbatched = next(r[2] for r in rows if r[:2] == ("one per call", CLIENTS[-1]))
    gain = top / one
    print(f"\nbatching gain at {CLIENTS[-1]} clients: {gain:.1f}x one request at a time "
          f"(target >= {TARGET_GAIN:.0f}x: {'met' if gain >= TARGET_GAIN else 'NOT met'}); "
          f"{top / unbatched:.1f}x the same load without batching")
    ceiling = model_ceiling(series, CLIENTS[-1], args.threads, args.device)
    print(f"the model alone (no HTTP): {CLIENTS[-1]} windows in one call are {ceiling:.1f}x "
          "faster than one call each; in one process the server's gain cannot exceed this by "
          "much (--model-process adds a second process working beside it)")
    print("server peak RSS: " + ", ".join(f"{m} {v:.0f} MiB" for m, v in rss.items())
          + f" (limit {RSS_LIMIT_MB} MiB: "
          + f"{'met' if max(rss.values()) < RSS_LIMIT_MB else 'NOT met'})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per load level")
    parser.add_argument("--threads", type=int, default=1, help="server torch CPU threads")
    parser.add_argument("--device", default=None, help="the server's --device (default: auto)")
    parser.add_argument("--model-process", action="store_true",
                        help="serve with --model-process (the model in its own process)")
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
