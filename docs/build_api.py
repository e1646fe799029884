"""Build the API reference (HTML, from the docstrings) with pdoc, offline: ``make docs``.

    python docs/build_api.py [--out build/api]

Every module of the installed package is documented (kronos_quant, its signals, finetune,
adapters and strategies), with numpy-style docstrings; open ``<out>/index.html``. Engines
are imported where a module's documentation needs them, so the ``[all]`` extra gives the
fullest pages; nothing is fetched from the network.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import kronos_quant

SKIP = ("kronos_quant.testing",)  # test helpers, not API


# Installed under kronos_quant from their own folders (see pyproject's package-dir), so a walk
# of kronos_quant's folder does not see them.
MAPPED = ("kronos_quant.adapters", "kronos_quant.strategies")


def modules() -> list[str]:
    """Every public module name of the package, parents before children."""
    names = ["kronos_quant", *MAPPED]
    for package in ("kronos_quant", *MAPPED):
        path = importlib.import_module(package).__path__
        for info in pkgutil.walk_packages(path, prefix=f"{package}."):
            leaf = info.name.rsplit(".", 1)[-1]
            if not leaf.startswith("_") and info.name not in SKIP:
                names.append(info.name)
    return sorted(set(names))


def build(out: str | Path = "build/api") -> Path:
    """Write the HTML reference into ``out``; returns its ``index.html``."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="numpy", footer_text=f"kronos-quant {kronos_quant.__version__}",
                          search=True, show_source=True)
    out = Path(out)
    # pdoc warns about lazily created engine classes and string annotations it cannot
    # resolve; the pages are complete without them.
    logging.getLogger("pdoc").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"pdoc(\.|$)")
        pdoc.pdoc(*modules(), output_directory=out)
    return out / "index.html"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/api", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    print(f"wrote {build(args.out)}")


if __name__ == "__main__":
    main()
