"""Experiments: certify a dataset subset with several methods against one attack and one profile.

``run_experiment`` writes one JSON record per (image, setting), resumably; the analyses, tables and
charts are functions of the records alone, so shards and reruns merge by concatenation.
"""

from dsmooth_core.experiments.analysis import (
    Group,
    ablation_groups,
    attack_table,
    certified_accuracy,
    certified_against_successful_attack,
    curve,
    curves_table,
    group_records,
    high_probability_lower_bound,
    smoothed_at_attack,
    successful_attack_table,
    summary_table,
    time_table,
)
from dsmooth_core.experiments.figures import ablation_figure, accuracy_figure, attack_figure, time_figure
from dsmooth_core.experiments.geometry import perturbation_distances
from dsmooth_core.experiments.paired import PairedCounts, holm, paired_comparison, paired_table
from dsmooth_core.experiments.plan import (
    ExperimentSpec,
    Setting,
    attack_config,
    derive_seed,
    evaluation_indices,
    parse_shard,
)
from dsmooth_core.experiments.records import RecordStore, load_records, merge_records, read_records, record_key
from dsmooth_core.experiments.report import ReportFiles, report_figures, report_tables, write_report
from dsmooth_core.experiments.runner import RunMemo, RunSummary, run_experiment
from dsmooth_core.experiments.setup import experiment_calibration, load_experiment_model

__all__ = [
    "ExperimentSpec",
    "Group",
    "PairedCounts",
    "RecordStore",
    "ReportFiles",
    "RunMemo",
    "RunSummary",
    "Setting",
    "ablation_figure",
    "ablation_groups",
    "accuracy_figure",
    "attack_config",
    "attack_figure",
    "attack_table",
    "certified_accuracy",
    "certified_against_successful_attack",
    "curve",
    "curves_table",
    "derive_seed",
    "evaluation_indices",
    "experiment_calibration",
    "group_records",
    "high_probability_lower_bound",
    "holm",
    "load_experiment_model",
    "load_records",
    "merge_records",
    "paired_comparison",
    "paired_table",
    "parse_shard",
    "perturbation_distances",
    "read_records",
    "record_key",
    "report_figures",
    "report_tables",
    "run_experiment",
    "smoothed_at_attack",
    "successful_attack_table",
    "summary_table",
    "time_figure",
    "time_table",
    "write_report",
]
