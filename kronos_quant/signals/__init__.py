"""Signal layer: Monte Carlo forecast paths → alpha scores, walk-forward scoring, evaluation.

The signal contract every engine adapter consumes: a score DataFrame (one float column per
scorer) or Series indexed by ("datetime", "instrument"), where the score at date t uses only
bars up to and including t. See docs/signals.md.
"""
from __future__ import annotations

from .cache import (
                    ForecastCache,
                    module_fingerprint,
                    read_paths,
                    weights_fingerprint,
                    window_key,
                    write_paths,
)
from .calibration import (
                    Calibration,
                    band_coverage,
                    calibrate,
                    central_band,
                    conformal_margin,
                    pit_histogram,
                    pit_values,
)
from .distributed import (
                    PARTITION_SIZE,
                    Partition,
                    ShardedRun,
                    ShardFailure,
                    assign_partitions,
                    forecast_panel_sharded,
                    plan_partitions,
)
from .evaluation import (
                    Evaluation,
                    baseline_scores,
                    evaluate,
                    hit_rate,
                    per_date_ic,
                    quantile_returns,
                    rebalance_spacing,
                    topk_turnover,
)
from .plots import fingerprint_label, plot_calibration, plot_ic
from .scorers import (
                    BUILTIN_SCORERS,
                    PathBatch,
                    describe_scorers,
                    get_scorer,
                    list_scorers,
                    register_scorer,
                    score_batch,
                    score_forecast,
                    score_forecasts,
)
from .skill import (
                    DEFAULT_VOL_WINDOW,
                    ForecastSkill,
                    crps_ensemble,
                    crps_normal,
                    forecast_skill,
                    history_volatility,
                    realised_closes,
                    skill_table,
)
from .store import read_scores, write_scores
from .transforms import (
                    check_scores,
                    cross_sectional,
                    cs_demean,
                    cs_rank,
                    cs_winsorise,
                    cs_winsorize,
                    cs_zscore,
                    score_column,
)
from .walkforward import (
                    PanelForecasts,
                    ScoringJob,
                    WindowSet,
                    forecast_panel,
                    iter_panel_forecasts,
                    plan_scoring,
                    plan_windows,
                    rebalance_dates,
                    score_metadata,
                    score_panel,
                    split_instruments,
                    window_seed,
)

__all__ = [
    # scorers
    "BUILTIN_SCORERS", "PathBatch", "register_scorer", "get_scorer", "list_scorers",
    "describe_scorers", "score_batch", "score_forecast", "score_forecasts",
    # cross-sectional transforms
    "check_scores", "score_column", "cross_sectional", "cs_rank", "cs_zscore", "cs_winsorise",
    "cs_winsorize", "cs_demean",
    # walk-forward scoring and its cache
    "PanelForecasts", "forecast_panel", "iter_panel_forecasts", "rebalance_dates", "score_panel",
    "window_seed", "ForecastCache", "weights_fingerprint", "module_fingerprint", "window_key",
    "ScoringJob", "plan_scoring", "score_metadata", "split_instruments", "WindowSet",
    "plan_windows", "write_paths", "read_paths",
    # sharded scoring under torchrun
    "forecast_panel_sharded", "ShardedRun", "ShardFailure", "Partition", "plan_partitions",
    "assign_partitions", "PARTITION_SIZE",
    # evaluation and calibration
    "Evaluation", "evaluate", "baseline_scores", "per_date_ic", "hit_rate", "quantile_returns",
    "topk_turnover", "rebalance_spacing", "Calibration", "calibrate", "central_band",
    "band_coverage", "pit_values",
    "pit_histogram", "crps_ensemble", "conformal_margin", "realised_closes",
    "plot_ic", "plot_calibration", "fingerprint_label",
    # forecast accuracy vs naive forecasts, with tests
    "ForecastSkill", "forecast_skill", "DEFAULT_VOL_WINDOW", "skill_table", "crps_normal",
    "history_volatility",
    # score files
    "write_scores", "read_scores",
]
