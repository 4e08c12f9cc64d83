"""An experiment's analysis as files: CSV tables and charts, PNG through kaleido or else HTML.

PNG export needs a Chromium for kaleido; where it is missing or fails, the charts are written as
HTML (plotly.js beside them, so they open offline) and the returned note says why, so a report is
never lost to a missing browser.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dsmooth_core.experiments.analysis import (
    ABLATION_PARAMS,
    Group,
    ablation_groups,
    attack_table,
    curves_table,
    group_records,
    successful_attack_table,
    summary_table,
    time_table,
)
from dsmooth_core.experiments.figures import ablation_figure, accuracy_figure, attack_figure, time_figure
from dsmooth_core.experiments.paired import paired_table
from dsmooth_core.experiments.png_export import export_png
from dsmooth_core.experiments.records import Record

if TYPE_CHECKING:
    import plotly.graph_objects as go

CURVES = {"certified_accuracy": "radius", "certified_accuracy_l2": "l2_inscribed", "certified_accuracy_l1": "l1_radius"}
CHART_WIDTH = 1100
# summary.md's number columns and how each is rounded
SUMMARY_COLUMNS = {
    "accuracy": ".1%",
    "abstain_rate": ".1%",
    "median_certified_radius": ".3g",
    "median_l2_inscribed": ".3g",
    "certified_against_attack": ".1%",
    "median_perturbation": ".3g",
    "successful_attacks": "d",
    "certified_against_successful_attack_share": ".1%",
    "smoothed_fooled_at_attack_share": ".1%",
    "mean_seconds": ".2f",
}
ImageFormat = Literal["png", "html"]


@dataclass(frozen=True)
class ReportFiles:
    tables: list[Path]
    charts: list[Path]
    note: str | None  # why the charts are HTML rather than PNG, if they are


def report_tables(groups: Sequence[Group], gamma: float | None = None) -> dict[str, list[dict]]:
    """Every table by file stem: three accuracy curves, the attack comparison, the successful attacks (per
    group, and paired between methods with Holm-adjusted sign tests), the timings, a summary."""
    tables = {name: curves_table(groups, field, gamma) for name, field in CURVES.items()}
    tables["certified_against_attack"] = attack_table(groups, gamma)
    tables["successful_attacks"] = successful_attack_table(groups)
    tables["paired_successful_attacks"] = paired_table(groups)
    tables["time_per_image"] = time_table(groups)
    tables["summary"] = summary_table(groups)
    return tables


def report_figures(groups: Sequence[Group], gamma: float | None = None) -> dict[str, go.Figure]:
    """Every chart by file stem; an ablation chart only where records vary that parameter."""
    figures = {name: accuracy_figure(groups, field, gamma=gamma) for name, field in CURVES.items()}
    figures["certified_against_attack"] = attack_figure(attack_table(groups, gamma))
    figures["time_per_image"] = time_figure(time_table(groups))
    for param in ABLATION_PARAMS:
        family = ablation_groups(groups, param)
        if family:
            figures[f"ablation_{param}"] = ablation_figure(family, param, gamma=gamma)
    return figures


def write_report(
    records: Iterable[Record], out_dir: str | Path, *, gamma: float | None = None, image_format: ImageFormat = "png"
) -> ReportFiles:
    """Write the tables as CSV and the charts as PNG (or HTML) into ``out_dir``."""
    groups = group_records(records)
    if not groups:
        raise ValueError("there are no records to analyse")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_tables = report_tables(groups, gamma)
    tables = [_write_csv(out / f"{name}.csv", rows) for name, rows in all_tables.items()]
    tables.append(_write_markdown(out / "summary.md", all_tables["summary"]))
    charts, note = _write_charts(report_figures(groups, gamma), out, image_format)
    return ReportFiles(tables, charts, note)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_markdown(path: Path, rows: list[dict]) -> Path:
    """The summary as a Markdown table, numbers rounded for reading (the CSV keeps them whole)."""
    columns = ["label", "images", "metric", *SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row["label"]), str(row["images"]), str(row["metric"])]
        cells += [_cell(row[name], spec) for name, spec in SUMMARY_COLUMNS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(value: float | None, spec: str) -> str:
    """A rounded number; "unknown" where the records predate the field, "n/a" where it divides by zero."""
    if value is None:
        return "unknown"
    return "n/a" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def _write_charts(figures: dict[str, go.Figure], out: Path, image_format: ImageFormat) -> tuple[list[Path], str | None]:
    note = None
    if image_format == "png":
        paths = [out / f"{name}.png" for name in figures]
        try:
            export_png(list(figures.values()), paths, width=CHART_WIDTH)
            return paths, None
        except Exception as exc:  # no usable Chromium, a kaleido error, or a stalled browser
            note = f"PNG export failed ({type(exc).__name__}: {exc}); the charts were written as HTML instead"
    paths = [out / f"{name}.html" for name in figures]
    for path, fig in zip(paths, figures.values(), strict=True):
        fig.write_html(path, include_plotlyjs="directory")
    return paths, note
