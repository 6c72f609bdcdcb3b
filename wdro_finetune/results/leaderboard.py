"""CSV leaderboards built from records only: ``<dataset>_<threat_model>.csv`` per pair, a robustness-curve
PNG per pair with W-PGD results, and ``README.md`` with the tables and the plots. Same records in,
byte-identical CSV and README files out."""

from __future__ import annotations

import csv
import io
import math
from fractions import Fraction
from collections import defaultdict
from pathlib import Path

from ..utils.fileio import atomic_write_text, folder_lock, publish_file_set
from .records import check_record, latest_by_id, read_records

LEADING = ["model", "method", "source", "clean_acc", "clean_acc_lo", "clean_acc_hi",
           "autoattack_acc", "autoattack_acc_lo", "autoattack_acc_hi", "aa_version", "n_examples", "eps", "seed"]
TRAILING = ["data_file", "record_id"]


def build_leaderboards(records_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write one CSV per (dataset, threat model) found in the records, and README.md. Returns paths.

    Rebuilds of one folder take turns (a lock on the folder from reading the records to the last write), so a
    rebuild that read fewer records can never land after, and overwrite, one that read more. The set of files
    is written as a whole (``publish_file_set``: staged, then renamed into place)."""
    _groups(records_dir)  # corrupt records fail before the output folder is created
    with folder_lock(out_dir):
        return publish_file_set(out_dir, lambda stage: _write(_groups(records_dir), stage, records_dir))


def _groups(records_dir: str | Path) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for rec in latest_by_id(read_records(records_dir)):
        check_record(rec, records_dir)
        groups[(rec["dataset"], rec["threat_model"])].append(rec)
    return groups


def _write(groups: dict[tuple[str, str], list[dict]], out_dir: Path, records_dir: str | Path) -> list[Path]:
    from .plots import collect_curves, robustness_curve

    written, sections = [], []
    for (dataset, threat), recs in sorted(groups.items()):
        rows = sorted((record_to_row(r) for r in recs), key=_sort_key)
        columns = _columns(rows)
        path = out_dir / f"{dataset}_{threat}.csv"
        atomic_write_text(path, rows_to_csv(rows, columns))
        written.append(path)
        section = _markdown_section(f"{dataset}_{threat}", rows, columns)
        if collect_curves(records_dir, dataset, threat):
            plot = robustness_curve(records_dir, dataset, threat, out_dir / f"{dataset}_{threat}_robustness.png")
            written.append(plot)
            section += f"\n\n![robustness curve, {dataset} {threat}]({plot.name})"
        sections.append(section)
    readme = out_dir / "README.md"
    atomic_write_text(readme, _readme(sections))
    return written + [readme]


def record_to_row(rec: dict) -> dict[str, object]:
    """Flatten a record: metadata, then ``<metric>``, ``<metric>_lo``, ``<metric>_hi`` and labels."""
    row: dict[str, object] = {k: rec.get(k) for k in ("model", "method", "source", "n_examples", "eps", "seed",
                                                      "record_id")}
    row["data_file"] = Path(str(rec.get("data_file", ""))).name
    for name, val in sorted(rec.get("metrics", {}).items()):
        row[name] = val.get("value")
        if val.get("lo") is not None:
            row[f"{name}_lo"], row[f"{name}_hi"] = val["lo"], val["hi"]
    row.update(sorted(rec.get("labels", {}).items()))
    return row


def _sort_key(row: dict) -> tuple:
    def desc(v) -> float:
        return -float(v) if isinstance(v, (int, float)) and not math.isnan(float(v)) else math.inf

    return (desc(row.get("autoattack_acc")), desc(row.get("clean_acc")), str(row.get("model")),
            str(row.get("method")), str(row.get("record_id")))


def _columns(rows: list[dict]) -> list[str]:
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    rest = present - set(LEADING) - set(TRAILING)
    bases = sorted({c for c in rest if not c.endswith(("_lo", "_hi")) or c[:-3] not in rest}, key=_column_key)
    middle = [c for b in bases for c in (b, f"{b}_lo", f"{b}_hi") if c in rest]
    return [c for c in LEADING if c in present or c in ("model", "method", "clean_acc", "autoattack_acc",
                                                         "n_examples", "eps")] + middle + TRAILING


def _column_key(column: str) -> tuple:
    """Group ``family@budget`` columns by family, budgets in numeric order (``1/510`` < ``1/255``)."""
    family, _, budget = column.partition("@")
    try:
        value = float(Fraction(budget)) if budget else -1.0
    except (ValueError, ZeroDivisionError):
        value = math.inf
    return (family.split("_")[0], value, family, column)


def format_cell(column: str, value: object) -> str:
    """Fixed text for a value: accuracies with 2 decimals, other floats with 6 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    base = column.removesuffix("_lo").removesuffix("_hi")
    if base.endswith(("_acc", "_rate", "_agree")) or "_acc@" in base:
        return f"{value:.2f}"
    return f"{value:.6g}"


def rows_to_csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(c, row.get(c)) for c in columns])
    return buffer.getvalue()


README_HIDDEN = ("data_file", "record_id", "source")
README_HIDDEN_FAMILIES = ("w2_loss@", "w2_dist@")  # in the CSV only


def _markdown_section(title: str, rows: list[dict], columns: list[str]) -> str:
    shown = [c for c in columns if not c.endswith(("_lo", "_hi")) and c not in README_HIDDEN
             and not c.startswith(README_HIDDEN_FAMILIES)]
    lines = [f"## {title}", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = []
        for c in shown:
            text = format_cell(c, row.get(c))
            if row.get(f"{c}_lo") is not None and text:
                text += f" [{format_cell(c + '_lo', row[c + '_lo'])}, {format_cell(c + '_hi', row[c + '_hi'])}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _readme(sections: list[str]) -> str:
    head = ("# Leaderboards\n\nGenerated by `wdro-finetune leaderboard` from the records; do not edit by hand.\n"
            "Accuracies in percent with 95% Wilson intervals in brackets; `n_examples` test images each.\n"
            "The CSV files hold every column (also the achieved W_2 distance and loss per budget, the data file "
            "and the record id).\n"
            "`w2_Rl@d` and `w2_Ru@d` bound the ratio of W_2 accuracy at budget d to clean accuracy (fractions, "
            "first-order, no attack for R_l); `upsilon` is the data-set gradient norm they use.\n")
    return head + "\n" + "\n\n".join(sections) + "\n"
