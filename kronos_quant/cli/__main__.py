"""``python -m kronos_quant.cli …``: the same commands as ``kronos-quant`` (e.g. under
``torchrun … -m -- kronos_quant.cli score …``)."""
from __future__ import annotations

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
