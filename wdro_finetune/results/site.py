"""The static HTML leaderboard site: ``index.html`` (a sortable, filterable table per board and protocol, the
plots inline) and ``rows/<row_id>.html`` per row (full provenance, the command that reproduces it). Rendered
from jinja2 templates shipped with the package; no network at view time (no CDN, plain JS)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import yaml

from .formatting import eps_text, format_cell
from .leaderboard import column_key, cell_text, main_columns
from .provenance import public_record
from .rows import Row, protocol_groups

STATIC = ("site.css", "site.js")


@dataclass(frozen=True)
class SweepRef:
    """The sweep file that made the records (as the reproducing command names it) and its job ids."""

    path: str
    job_ids: frozenset[str]


def site_files(boards: dict[tuple[str, str], list[Row]], plots: dict[str, bytes],
               sweep: SweepRef | None = None) -> dict[str, bytes]:
    """{path relative to the site folder: bytes}: index.html, rows/*.html, the static files and ``plots``."""
    env = _environment()
    files = {name: (resources.files(__package__) / "templates" / name).read_bytes() for name in STATIC}
    files.update(plots)
    index = [_board(f"{d}_{t}", rows, plots) for (d, t), rows in boards.items()]
    files["index.html"] = env.get_template("index.html.j2").render(root="", boards=index).encode()
    row_template = env.get_template("row.html.j2")
    for (dataset, threat), rows in boards.items():
        for row in rows:
            page = row_template.render(root="../", row=_row_page(f"{dataset}_{threat}", row, sweep))
            files[f"rows/{row.row_id}.html"] = page.encode()
    return files


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("wdro_finetune", "results/templates"),
                              autoescape=True, keep_trailing_newline=True, trim_blocks=True,
                              lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _board(name: str, rows: list[Row], plots: dict[str, bytes]) -> dict:
    columns = main_columns(rows)
    groups = [{"title": protocol.title(), "rows": [{"row_id": r.row_id, "cells": [_cell(r, c) for c in columns]}
                                                  for r in group]}
              for protocol, group in protocol_groups(rows)]
    plot = f"{name}_robustness.png"
    return {"name": name, "columns": columns, "groups": groups, "plot": plot if plot in plots else None}


def _cell(row: Row, column) -> dict:
    """Text, numeric sort key, hover text (interval, attack) and link of one index cell."""
    val = row.metrics.get(column.key)
    sort = row.rank if column.key == "rank" else val.get("value") if val else row.fields.get(column.key)
    tip = ""
    if val and val.get("lo") is not None:
        tip = f"95% interval [{format_cell(column.key, val['lo'])}, {format_cell(column.key, val['hi'])}]"
    attack = row.labels.get(column.key.replace("w2_best_acc@", "w2_best_attack@"))
    if column.key.startswith("w2_best_acc@") and attack:
        tip += f"; attack: {attack}"
    return {"text": cell_text(row, column), "sort": sort if isinstance(sort, (int, float)) else None,
            "tip": tip, "link": f"rows/{row.row_id}.html" if column.key == "model" else None}


def _row_page(board: str, row: Row, sweep: SweepRef | None) -> dict:
    training = row.fields.get("training")
    return {"board": board, "model": row.fields["model"], "method": row.fields["method"],
            "protocol": row.protocol.title(), "rank": row.rank if row.rank is not None else "not ranked",
            "checkpoint_sha256": row.fields.get("checkpoint_sha256") or "not recorded",
            "data_file": row.fields.get("data_file"), "data_sha256": row.fields.get("data_sha256"),
            "record_ids": row.record_ids, "commands": reproduce_steps(row, sweep), "metrics": _metrics(row),
            "labels": sorted(row.labels.items()), "training": _yaml(training) if training else None,
            "records": [{"id": r["record_id"], "json": json.dumps(public_record(r), indent=2, sort_keys=True)}
                        for r in row.records]}


def _metrics(row: Row) -> list[dict]:
    out = []
    for name in sorted(row.metrics, key=column_key):
        val = row.metrics[name]
        source = next((r["record_id"] for r in reversed(row.records) if name in r.get("metrics", {})), "derived")
        interval = (f"[{format_cell(name, val['lo'])}, {format_cell(name, val['hi'])}]"
                    if val.get("lo") is not None else "")
        out.append({"name": name, "value": format_cell(name, val.get("value")), "sort": val.get("value"),
                    "interval": interval, "n": val.get("n", ""), "record": source})
    return out


def reproduce_steps(row: Row, sweep: SweepRef | None) -> list[dict]:
    """Per record of the row: its sweep job, or the fine-tune config and the evaluate command."""
    steps = []
    for rec in row.records:
        rid, job = rec["record_id"], rec.get("job_id")
        if sweep is not None and job in sweep.job_ids:
            steps.append(_step(f"Record {rid}: sweep job {job} (fine-tuning, if any, and evaluation; skipped "
                               "while the sweep's records folder already holds the job's record).",
                               f"wdro-finetune sweep {sweep.path} --job {job}"))
            continue
        training = rec.get("training")
        if training:
            steps.append(_step(f"Record {rid}: fine-tune with the recorded training config.",
                               "wdro-finetune finetune --config finetune.yaml", "finetune.yaml",
                               _yaml({k: v for k, v in training.items() if k != "steps_done"})))
        steps.append(_step(f"Record {rid}: evaluate (metric options as recorded under metric_options below).",
                           evaluate_command(rec)))
    return steps


def evaluate_command(rec: dict) -> str:
    """The ``wdro-finetune evaluate`` command line of a record's identity (model, weights, data, metrics)."""
    training = rec.get("training") or {}
    checkpoint = f"{training['out']}/model.safetensors" if training.get("out") else public_record(rec)["checkpoint"]
    parts = ["wdro-finetune evaluate", f"--model {rec['model']}", f"--source {rec.get('source')}",
             f"--dataset {rec['dataset']}", f"--threat-model {rec['threat_model']}",
             f"--eps {eps_text(float(rec['eps']))}", f"--n-examples {rec['n_examples']}", f"--seed {rec.get('seed')}",
             f"--metrics {','.join(_metric_names(rec))}"]
    if checkpoint:
        parts.append(f"--checkpoint {checkpoint}")
    if rec.get("method") and rec["method"] != "pretrained":
        parts.append(f"--method {rec['method']}")
    return " \\\n    ".join(parts)


def _metric_names(rec: dict) -> list[str]:
    """The metrics a record ran (its ``metric_options`` has one entry per metric)."""
    return list((rec.get("metric_options") or {}).keys())


def _step(caption: str, command: str, file_name: str | None = None, file: str | None = None) -> dict:
    return {"caption": caption, "command": command, "file_name": file_name, "file": file}


def _yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False)
