"""Every code block of the README runs, offline.

Blocks run in a folder holding the files the README names (``bars.csv``: one daily series;
``panel.csv``: the bundled universe). An HTML comment after a block says how it is checked:

* none: Python blocks run in order in one namespace (as a reader pastes them); shell blocks
  run with ``bash -e`` and this environment's ``kronos-quant`` on PATH;
* ``hub``: the same, with the published Hub ids replaced by the embedded demo model's folders
  (a local checkpoint in the Hub layout); ``| OLD => NEW`` parts shrink sizes for the test;
* ``make-dry-run``: ``make -n`` of each target prints the command the README promises;
* ``install``: every extra named by a ``pip install`` line exists, and torch's pin is the
  Makefile's;
* ``exchange``: the live commands run against the local mock exchange (``--api-host``,
  ``--once``); ``pip`` lines are checked as for ``install``;
* ``tests/...``: run as written by that test file; ``text``: a listing whose folders exist.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import tomllib

from kronos_quant.assets import ASSETS, UNIVERSE

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HUB_IDS = {"NeoQuasar/Kronos-Tokenizer-base": str(ASSETS / "tokenizer"),
           "NeoQuasar/Kronos-small": str(ASSETS / "model")}
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n(?:<!-- test: (.*?) -->\n)?", re.M | re.S)
# Sections whose blocks another test file runs as written (it reads the section itself).
DELEGATED = {"## Many machines": "tests/test_scale.py",
             "## Service and dashboard": "tests/test_serve_browser.py"}


@dataclass
class Block:
    line: int
    lang: str
    code: str
    mode: str
    swaps: list[tuple[str, str]]

    @property
    def name(self) -> str:
        return f"line {self.line} ({self.lang or 'text'}, {self.mode})"

    def runnable(self) -> str:
        code = self.code
        if self.mode == "hub":
            for hub_id, local in HUB_IDS.items():
                code = code.replace(hub_id, local)
        for old, new in self.swaps:
            assert old in code, f"README {self.name}: {old!r} not in the block"
            code = code.replace(old, new)
        return code


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in BLOCK.finditer(text):
        marker = [p.strip() for p in (m.group(3) or "").split("|")]
        section = re.findall(r"^## .*$", text[:m.start()], re.M)
        if section and section[-1] in DELEGATED:
            marker = [DELEGATED[section[-1]]]
        swaps = [tuple(s.strip() for s in part.split("=>")) for part in marker[1:]]
        blocks.append(Block(text[:m.start()].count("\n") + 1, m.group(1), m.group(2),
                            marker[0] or "run", swaps))
    return blocks


BLOCKS = readme_blocks()
# The finetuning section: a shell block, then Python loading what it wrote (its own test, so
# that xdist runs it beside the main chain).
FINETUNE = [b for b in BLOCKS if b.line > next(b.line for b in BLOCKS if "finetune predictor"
                                               in b.code) - 1][:2]
PYTHON_CHAIN = [b for b in BLOCKS if b.lang == "python" and b not in FINETUNE]
SHELL = [b for b in BLOCKS if b.lang == "bash" and b.mode in ("run", "hub")
         and b not in FINETUNE]


def write_inputs(folder: Path) -> Path:
    """The files the README's blocks name, made from the bundled universe."""
    panel = pd.read_csv(UNIVERSE)
    panel.to_csv(folder / "panel.csv", index=False)
    msft = panel[panel["instrument"] == "MSFT"].drop(columns="instrument")
    msft.rename(columns={"datetime": "timestamps"}).to_csv(folder / "bars.csv", index=False)
    return folder


def shell_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"  # small models on a shared CPU (see the README's Performance)
    env["MPLBACKEND"] = "Agg"
    return env


def run_shell(code: str, cwd: Path, what: str) -> str:
    done = subprocess.run(["bash", "-e", "-c", code], cwd=cwd, env=shell_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (f"README {what} failed:\n{done.stdout[-2000:]}\n"
                                  f"{done.stderr[-3000:]}")
    return done.stdout


def check_pip_lines(code: str) -> int:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    checked = 0
    for line in code.splitlines():
        if not line.startswith("pip install"):
            continue
        checked += 1
        for group in re.findall(r'"\.\[([^\]]+)\]"', line):
            unknown = set(group.split(",")) - extras
            assert not unknown, f"README names unknown extra(s) {unknown}"
        for pin in re.findall(r"torch==[\d.]+", line):
            assert f'"{pin}"' in makefile, f"README pins {pin}, the Makefile does not"
    return checked


def test_every_block_has_a_known_mode():
    known = {"run", "hub", "make-dry-run", "install", "exchange", "text"}
    for block in BLOCKS:
        assert block.mode in known or block.mode.startswith("tests/"), block.name
        assert block.lang in ("python", "bash", ""), block.name
        if block.lang == "":
            assert block.mode == "text", f"README {block.name}: a block without a language"
    assert len(PYTHON_CHAIN) >= 6 and len(SHELL) >= 2


def test_the_two_commands_come_first():
    first = BLOCKS[0]
    assert first.mode == "make-dry-run"
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert commands == ["make demo", "make test"]
    for target, expected in (("demo", "kronos-quant demo"), ("test", "pytest")):
        done = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0 and expected in done.stdout, done.stdout + done.stderr


def test_install_blocks_name_real_extras():
    blocks = [b for b in BLOCKS if b.mode in ("install", "exchange")]
    assert sum(check_pip_lines(b.code) for b in blocks) >= 4


def run_blocks(blocks: list[Block], folder: Path, namespace: dict) -> dict:
    """Run ``blocks`` in README order in ``folder``: shell ones in bash, Python in ``namespace``."""
    for block in sorted(blocks, key=lambda b: b.line):
        if block.lang == "bash":
            run_shell(block.runnable(), folder, block.name)
            continue
        try:
            exec(compile(block.runnable(), f"README.md:{block.line}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"README {block.name} failed: "
                                 f"{type(err).__name__}: {err}") from err
    return namespace


def test_python_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(write_inputs(tmp_path))
    namespace = run_blocks(PYTHON_CHAIN, tmp_path, {"__name__": "__readme__"})
    # What the blocks promise, checked on what they produced.
    assert namespace["fc"].paths.shape == (16, 48, 6)
    assert (tmp_path / "fan.png").stat().st_size > 10_000
    assert len(namespace["mean"]) == 48
    assert namespace["pf"].orders.count() > 0
    assert "kronos-signal-quality" in (tmp_path / "tearsheet.html").read_text()
    assert namespace["result"].risk.shape[0] >= 4
    assert "RankIC" in capsys.readouterr().out


def test_finetune_blocks_run(tmp_path, monkeypatch):
    """The finetuning commands, then the Python line loading their result (with the Quick
    start's import, which a reader has already run)."""
    assert [b.lang for b in FINETUNE] == ["bash", "python"]
    monkeypatch.chdir(write_inputs(tmp_path))
    from kronos_quant import KronosPredictor

    namespace = run_blocks(FINETUNE, tmp_path, {"KronosPredictor": KronosPredictor})
    assert namespace["finetuned"].model is not None
    assert (tmp_path / "runs" / "pred" / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize("block", SHELL, ids=[b.name for b in SHELL])
def test_shell_block_runs(block, tmp_path):
    out = run_shell(block.runnable(), write_inputs(tmp_path), block.name)
    assert "error" not in out.lower()
    if "kronos-quant forecast" in block.code:
        assert (tmp_path / "forecast_out" / "fan.png").is_file()
    if "kronos-quant score" in block.code:
        assert (tmp_path / "scores.parquet").is_file() and "RankIC" in out


def test_live_block_runs_against_the_mock_exchange(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from mock_exchange import MockServer

    [block] = [b for b in BLOCKS if b.mode == "exchange"]
    check_pip_lines(block.code)
    code = "\n".join(line for line in block.code.splitlines() if not line.startswith("pip "))
    with MockServer() as server:
        code = code.replace("kronos-quant live ", f"kronos-quant live --api-host {server.url} "
                            "--once ", 1)
        out = run_shell(code, write_inputs(tmp_path), block.name)
    assert "decisions: 2 on 1 candle times" in out  # two symbols, the newest closed candle
    assert (tmp_path / "runs" / "hourly" / "ledger.sqlite").is_file()


def test_delegated_and_text_blocks():
    for block in BLOCKS:
        if block.mode.startswith("tests/"):
            section = next(k for k, v in DELEGATED.items() if v == block.mode)
            assert section in (ROOT / block.mode).read_text(), block.name
        if block.mode == "text":
            folders = re.findall(r"^(\S+)/", block.code, re.M)
            assert folders and all((ROOT / f).is_dir() for f in folders), folders


def test_the_api_reference_builds_offline(tmp_path):
    """``make docs``: pdoc renders every module, the mapped adapters and strategies included."""
    pytest.importorskip("pdoc")
    sys.path.insert(0, str(ROOT / "docs"))
    import build_api

    names = build_api.modules()
    assert {"kronos_quant.predictor", "kronos_quant.adapters.vectorbt",
            "kronos_quant.strategies.live", "kronos_quant.signals.walkforward"} <= set(names)
    index = build_api.build(tmp_path / "api")
    assert index.is_file()
    page = (tmp_path / "api" / "kronos_quant" / "predictor.html").read_text()
    assert "forecast_batch" in page and "KronosPredictor" in page
    assert (tmp_path / "api" / "kronos_quant" / "adapters" / "vectorbt.html").is_file()
    done = subprocess.run(["make", "-n", "docs"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "docs/build_api.py" in done.stdout
