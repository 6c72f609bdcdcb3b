"""Leaderboards built from records only: ``<dataset>_<threat_model>.csv`` per pair (every column), a
robustness-curve PNG per pair, ``README.md`` with compact main tables grouped by evaluation protocol,
and optionally a static HTML site. Same records in, byte-identical CSV, README and HTML files out."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..utils.fileio import atomic_write_bytes, folder_lock, publish_file_set
from .formatting import budget_value, format_cell
from .rows import Row, build_rows, protocol_groups

if TYPE_CHECKING:
    from .site import SweepRef

LEADING = ["rank", "model", "method", "source", "clean_acc", "clean_acc_lo", "clean_acc_hi",
           "autoattack_acc", "autoattack_acc_lo", "autoattack_acc_hi", "aa_version", "protocol", "n_examples",
           "eps", "seed"]
ALWAYS = ("rank", "model", "method", "clean_acc", "autoattack_acc", "protocol", "n_examples", "eps")
TRAILING = ["data_file", "record_id"]
INVARIANCE = "inv_human_linf04_agree"  # the main table's invariance column (all four are in the CSV)


def build_leaderboards(records_dir: str | Path, out_dir: str | Path, *, html_dir: str | Path | None = None,
                       sweep: SweepRef | None = None) -> list[Path]:
    """Write one CSV and plot per (dataset, threat model), README.md, and with ``html_dir`` the site.
    ``sweep``: the sweep that made the records (the site's reproducing commands name it;
    :func:`wdro_finetune.workflows.sweep.sweep_ref`).

    Rebuilds of one folder take turns (a lock on the folder from reading the records to the last write), so a
    rebuild that read fewer records can never land after, and overwrite, one that read more. Each folder's set of
    files is written as a whole (:func:`write_outputs`)."""
    build_rows(records_dir)  # corrupt records fail before the output folder is created
    with folder_lock(out_dir):
        boards = build_rows(records_dir)
        files = board_files(boards, records_dir)
        written = write_outputs(out_dir, files)
        if html_dir is not None:
            from .site import site_files

            plots = {name: data for name, data in files.items() if name.endswith(".png")}
            pages = write_outputs(html_dir, site_files(boards, plots, sweep))
            for stale in set(Path(html_dir, "rows").glob("*.html")) - set(pages):  # rows that no longer exist
                stale.unlink()
            written += pages
    return written


def write_outputs(out_dir: str | Path, files: dict[str, bytes]) -> list[Path]:
    """Every write of a leaderboard build goes through here: ``files`` maps paths relative to ``out_dir``
    to their bytes; the set is staged and then renamed into place (``publish_file_set``), so an interrupted
    build never leaves new and old files mixed."""
    def write(stage: Path) -> list[Path]:
        return [atomic_write_bytes(stage / name, data) for name, data in files.items()]

    return publish_file_set(out_dir, write)


def board_files(boards: dict[tuple[str, str], list[Row]], records_dir: str | Path) -> dict[str, bytes]:
    """{file name: bytes}: the CSVs, the plots and README.md."""
    from .plots import curve_png

    files, sections = {}, []
    for (dataset, threat), rows in boards.items():
        name = f"{dataset}_{threat}"
        flat = [flat_row(r) for r in rows]
        files[f"{name}.csv"] = rows_to_csv(flat, csv_columns(flat)).encode()
        section = markdown_section(name, rows)
        png = curve_png(rows, records_dir, f"{dataset} ({threat} ground cost)")
        if png is not None:
            files[f"{name}_robustness.png"] = png
            section += f"\n\n![robustness curve, {dataset} {threat}]({name}_robustness.png)"
        sections.append(section)
    files["README.md"] = readme(sections).encode()
    return files


def flat_row(row: Row) -> dict[str, object]:
    """A row as CSV cells: rank, identity, ``<metric>``, ``<metric>_lo``, ``<metric>_hi`` and labels."""
    flat: dict[str, object] = {k: row.fields.get(k) for k in ("model", "method", "source", "n_examples", "eps",
                                                              "seed", "data_file")}
    flat.update(rank=row.rank, protocol=row.protocol.title(), record_id=" ".join(row.record_ids))
    for name, val in sorted(row.metrics.items()):
        flat[name] = val.get("value")
        if val.get("lo") is not None:
            flat[f"{name}_lo"], flat[f"{name}_hi"] = val["lo"], val["hi"]
    flat.update(sorted(row.labels.items()))
    return flat


def csv_columns(rows: list[dict]) -> list[str]:
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    rest = present - set(LEADING) - set(TRAILING)
    bases = sorted({c for c in rest if not c.endswith(("_lo", "_hi")) or c[:-3] not in rest}, key=column_key)
    middle = [c for b in bases for c in (b, f"{b}_lo", f"{b}_hi") if c in rest]
    return [c for c in LEADING if c in present or c in ALWAYS] + middle + TRAILING


def column_key(column: str) -> tuple:
    """Group ``family@budget`` columns by family, budgets in numeric order (``1/510`` < ``1/255``)."""
    family, _, budget = column.partition("@")
    return (family.split("_")[0], budget_value(budget) if budget else -1.0, family, column)


def rows_to_csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(c, row.get(c)) for c in columns])
    return buffer.getvalue()


@dataclass(frozen=True)
class Column:
    """A main-table column: ``key`` is a metric name or a row field; ``interval``: show [lo, hi]."""

    key: str
    header: str
    interval: bool = False


def main_columns(rows: list[Row]) -> list[Column]:
    """rank, model, method, clean, AutoAttack, best-known W_2 at three budgets, invariance, n."""
    budgets = sorted({m.partition("@")[2] for r in rows for m in r.metrics if m.startswith("w2_best_acc@")},
                     key=budget_value)
    if len(budgets) > 3:
        budgets = [budgets[0], budgets[len(budgets) // 2], budgets[-1]]
    columns = [Column("rank", "rank"), Column("model", "model"), Column("method", "method"),
               Column("clean_acc", "clean"), Column("autoattack_acc", "AutoAttack", interval=True)]
    columns += [Column(f"w2_best_acc@{b}", f"best W_2 @ {b}") for b in budgets]
    if any(INVARIANCE in r.metrics for r in rows):
        columns.append(Column(INVARIANCE, "invariance"))
    return columns + [Column("n_examples", "n")]


def cell_text(row: Row, column: Column) -> str:
    """Main-table text of one cell (fields as they are, metrics with 2 decimals)."""
    if column.key == "rank":
        return "" if row.rank is None else str(row.rank)
    if column.key not in row.metrics:
        return format_cell(column.key, row.fields.get(column.key))
    val = row.metrics[column.key]
    text = format_cell(column.key, val.get("value"))
    if column.interval and val.get("lo") is not None and text:
        text += f" [{format_cell(column.key, val['lo'])}, {format_cell(column.key, val['hi'])}]"
    family, _, budget = column.key.partition("@")
    if family == "w2_best_acc" and text and f"w2k_acc@{budget}" not in row.metrics:
        text += " " + WPGD_ONLY
    return text


WPGD_ONLY = "‡"  # a best-known W_2 cell from W-PGD alone (no minimal-distance evaluation of that row)


def markdown_section(title: str, rows: list[Row]) -> str:
    """``## title``, then one ranked main table per evaluation protocol, standard AutoAttack first."""
    columns = main_columns(rows)
    lines = [f"## {title}"]
    for protocol, group in protocol_groups(rows):
        lines += ["", f"### {protocol.title()}", "", "| " + " | ".join(c.header for c in columns) + " |",
                  "|" + "|".join("---" if c.key in ("model", "method") else "---:" for c in columns) + "|"]
        lines += ["| " + " | ".join(cell_text(r, c) for c in columns) + " |" for r in group]
    return "\n".join(lines)


def readme(sections: list[str]) -> str:
    head = ("# Leaderboards\n\nGenerated by `wdro-finetune leaderboard` from the records; do not edit by hand.\n"
            "Rows are ranked by AutoAttack accuracy **within one evaluation protocol** (AutoAttack version and "
            "attacks, test images n, eps) and never across protocols: like RobustBench, which ranks standard "
            "AutoAttack only, standard AutoAttack comes first; the fast pair (apgd-ce + apgd-t) is a weaker "
            "attack, so its numbers are not comparable with standard ones.\n"
            "Accuracies in percent; AutoAttack with its 95% Wilson interval in brackets (every interval is in "
            "the CSV). `best W_2 @ d`: best-known W_2 distributional accuracy at budget d (pixel units of [0, 1]), the "
            "lower of W-PGD and the knapsack attack on minimal adversarial distances where both ran "
            f"(`w2_best_attack@d` in the CSV says which); {WPGD_ONLY} marks a row evaluated with W-PGD only, a weaker "
            "attack whose number the knapsack may lower by tens of points: compare such cells only with each other. "
            "`invariance`: agreement with the human labels on the "
            "L_inf eps = 0.4 invariance set of Tramer et al. (MNIST).\n"
            "The CSV files hold every column (per-attack W_2 results, distances, loss, bounds, all invariance "
            "sets, the data file and the record ids of the row); `w2_Rl@d` and `w2_Ru@d` there bound the ratio of "
            "W_2 accuracy at budget d to clean accuracy (first-order, no attack for R_l).\n")
    return head + "\n" + "\n\n".join(sections) + "\n"
