"""kronos-quant: the Kronos candlestick foundation model for quant research and trading."""
from __future__ import annotations

import logging

from .config import KronosConfig, KronosTokenizerConfig
from .forecast import Forecast
from .model import Kronos
from .predictor import KronosPredictor
from .tokenizer import KronosTokenizer
from .tradespec import TradeSpec

__all__ = ["Kronos", "KronosTokenizer", "KronosPredictor", "Forecast", "KronosConfig",
           "KronosTokenizerConfig", "TradeSpec"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
