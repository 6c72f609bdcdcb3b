"""Export a leaderboard row for RobustBench: ``model_info/<dataset>/<threat_model>/<name>.json`` in RobustBench's
format (percent strings with two decimals) with our W_2 and invariance figures in a separate ``wdro_finetune``
block, and the weights beside it as ``models/<dataset>/<threat_model>/<name>.pt`` (RobustBench's layout)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..results.formatting import budget_value, eps_text
from ..results.provenance import portable_path
from ..results.rows import Row, build_rows
from ..utils.fileio import atomic_write_text, sha256_file

log = logging.getLogger(__name__)
EXTENSION = "wdro_finetune"  # the key of our block; RobustBench's readers ignore it


@dataclass(frozen=True)
class PaperInfo:
    """What RobustBench asks about the model's paper; empty where there is none."""

    name: str = ""
    link: str = ""
    authors: str = ""
    venue: str = ""
    additional_data: bool = False


def export_robustbench(records_dir: str | Path, record_id: str, out_dir: str | Path, *, name: str | None = None,
                       checkpoint: str | Path | None = None, paper: PaperInfo = PaperInfo()) -> list[Path]:
    """Write the model_info JSON and the RobustBench-layout weights of the row holding ``record_id``."""
    row = find_row(records_dir, record_id)
    dataset, threat = _robustbench_names(row)
    name = name or _default_name(row)
    weights = _weights_file(row, checkpoint)
    info = model_info(row, paper)
    from ..config import parse_dataset, parse_threat_model
    from ..models import load_model
    from ..models.checkpoint import save_robustbench_layout

    loaded = load_model(row.fields["model"], parse_dataset(dataset), parse_threat_model(threat),
                        source=row.fields.get("source"), checkpoint=weights)
    model_file = save_robustbench_layout(loaded.module, Path(out_dir) / "models", dataset, threat, name)
    info_file = Path(out_dir) / "model_info" / dataset / threat / f"{name}.json"
    atomic_write_text(info_file, json.dumps(info, indent=2) + "\n")
    return [info_file, model_file]


def export(format: str, records_dir: str | Path, record_id: str, out_dir: str | Path, *, name: str | None = None,
           checkpoint: str | Path | None = None, paper: PaperInfo = PaperInfo()) -> list[Path]:
    """Export in ``format`` (one of :data:`FORMATS`); returns the files written."""
    if format not in FORMATS:
        raise UserError(f"export format must be one of {', '.join(FORMATS)}, got {format!r}")
    return FORMATS[format](records_dir, record_id, out_dir, name=name, checkpoint=checkpoint, paper=paper)


def find_row(records_dir: str | Path, record_id: str) -> Row:
    """The leaderboard row that holds ``record_id`` (with every other record of that model merged in)."""
    for rows in build_rows(records_dir).values():
        for row in rows:
            if record_id in row.record_ids:
                return row
    raise UserError(f"no record {record_id!r} in {records_dir}")


def model_info(row: Row, paper: PaperInfo = PaperInfo()) -> dict:
    """RobustBench's model_info fields in its order, then our extension block."""
    from ..data.datasets import split_size
    from ..config import parse_dataset

    protocol = row.protocol
    if protocol.aa_version is None:
        raise UserError(f"record {row.record_ids[-1]} has no AutoAttack result: RobustBench ranks by it")
    full = split_size(parse_dataset(row.fields["dataset"]), "test")
    standard = protocol.aa_version == "standard" and protocol.n_examples >= full
    aa = _percent(row.value("autoattack_acc"))
    return {
        "link": paper.link, "name": paper.name or f"{row.fields['model']} ({row.fields['method']})",
        "authors": paper.authors, "additional_data": paper.additional_data, "number_forward_passes": 1,
        "dataset": row.fields["dataset"], "venue": paper.venue, "architecture": row.fields["model"],
        "eps": eps_text(float(row.fields["eps"])), "clean_acc": _percent(row.value("clean_acc")), "reported": aa,
        "autoattack_acc": aa, "external": _external(row), "unreliable": not standard,
        "footnote": None if standard else (f"Evaluated by wdro-finetune: {protocol.title()} (the test split has "
                                           f"{full} images); RobustBench ranks standard AutoAttack on the full "
                                           "test split only."),
        EXTENSION: extension_block(row),
    }


def extension_block(row: Row) -> dict:
    """Our figures beyond RobustBench's: W_2 per budget (best-known, per attack), invariance, provenance."""
    def per_budget(prefix: str) -> dict:
        found = {n[len(prefix):]: v for n, v in row.metrics.items() if n.startswith(prefix)}
        return {b: {"acc": _percent(v["value"]), "lo": _percent(v.get("lo")), "hi": _percent(v.get("hi"))}
                for b, v in sorted(found.items(), key=lambda kv: budget_value(kv[0]))}

    best = per_budget("w2_best_acc@")
    for budget, entry in best.items():
        entry["attack"] = row.labels.get(f"w2_best_attack@{budget}")
    return {"record_ids": row.record_ids, "method": row.fields["method"],
            "checkpoint_sha256": row.fields.get("checkpoint_sha256"), "protocol": row.protocol.title(),
            "w2_best_acc": best, "w2_acc_w_pgd": per_budget("w2_acc@"), "w2_acc_knapsack": per_budget("w2k_acc@"),
            "invariance": {n: _percent(v["value"]) for n, v in sorted(row.metrics.items()) if n.startswith("inv_")},
            "training": row.fields.get("training")}


def _external(row: Row) -> str | None:
    """A pointwise robust accuracy at eps below AutoAttack's (from the minimal-distance attacks), if any."""
    eps, aa = float(row.fields["eps"]), row.value("autoattack_acc")
    lower = [v["value"] for n, v in row.metrics.items() if n.startswith("robust_acc@")
             and math.isclose(budget_value(n.partition("@")[2]), eps, rel_tol=1e-9) and v["value"] < aa]
    return _percent(min(lower)) if lower else None


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _robustbench_names(row: Row) -> tuple[str, str]:
    from ..compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    dataset, threat = row.fields["dataset"], row.fields["threat_model"]
    if dataset not in {d.value for d in BenchmarkDataset} or threat not in {t.value for t in ThreatModel}:
        raise UserError(f"RobustBench has no {dataset} {threat} leaderboard")
    return dataset, threat


def _default_name(row: Row) -> str:
    text = f"{row.fields['model']}_{row.fields['method']}"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _weights_file(row: Row, checkpoint: str | Path | None) -> Path:
    """The row's weights file: ``checkpoint``, else where a record or the training config says; its sha256
    must be the recorded one."""
    if checkpoint and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {checkpoint} does not exist")
    candidates = [Path(checkpoint)] if checkpoint else []
    for rec in reversed(row.records):
        out = (rec.get("training") or {}).get("out")
        candidates += [Path(p) for p in (rec.get("checkpoint"), f"{out}/model.safetensors" if out else None) if p]
    expected = row.fields.get("checkpoint_sha256")
    for path in candidates:
        if path.is_file():
            if expected and sha256_file(path) != expected:
                raise UserError(f"{path} is not the recorded checkpoint (sha256 differs from {expected})")
            return path
    where = portable_path(row.records[-1].get("checkpoint")) or "none recorded"
    raise UserError(f"the weights of record {row.record_ids[-1]} ({where}) are not here; pass --checkpoint FILE")


FORMATS = {"robustbench": export_robustbench}  # ``wdro-finetune export FORMAT``
