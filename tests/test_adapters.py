"""kronos_quant.adapters: the one lazy engine import and its module -> extra table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from kronos_quant.adapters import ENGINE_EXTRAS, install_hint, require_engine

ROOT = Path(__file__).resolve().parents[1]


def test_every_engine_maps_to_a_declared_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(ENGINE_EXTRAS.values()) <= set(extras)
    assert install_hint("qlib", "reports") == 'pip install "kronos-quant[qlib,reports]"'


@pytest.mark.parametrize("module", sorted(ENGINE_EXTRAS))
def test_a_missing_engine_names_its_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    extra = ENGINE_EXTRAS[module]
    with pytest.raises(ImportError, match=rf'pip install "kronos-quant\[{extra}\]"'):
        require_engine(module)


def test_an_installed_engine_is_returned_and_the_package_imports_none():
    assert require_engine("backtrader").__name__ == "backtrader"
    code = ("import sys, kronos_quant.adapters as a; "
            "print(sorted(m for m in a.ENGINE_EXTRAS if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
