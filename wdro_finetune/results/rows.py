"""Leaderboard rows from records: every record of one model under one evaluation protocol is one row.

A model is evaluated in several runs (AutoAttack and W-PGD first, minimal distances later); the row
merges them: later records win a metric both have, the row keeps every record id. Rows carry their
AutoAttack protocol, by which they are grouped and ranked (never across protocols)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .best_known import best_known
from .formatting import eps_text
from .provenance import relink_records
from .records import check_record, latest_by_id, read_records, stable_hash

DEFAULT_ATTACKS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "fast": ("apgd-ce", "apgd-t")}


@dataclass(frozen=True)
class Protocol:
    """How the ranked number was measured: AutoAttack version and attacks, test images, eps."""

    aa_version: str | None  # None: no AutoAttack in the row
    attacks: tuple[str, ...]
    n_examples: int
    eps: float

    def order(self) -> tuple:
        """Standard AutoAttack first (the only evaluation RobustBench ranks), rows without AutoAttack last."""
        tier = 0 if self.aa_version == "standard" else 1 if self.aa_version else 2
        return (tier, self.aa_version or "", self.attacks, -self.n_examples, self.eps)

    def title(self) -> str:
        if self.aa_version is None:
            head = "No AutoAttack evaluation"
        else:
            head = f"{self.aa_version.capitalize()} AutoAttack" + (f" ({', '.join(self.attacks)})" if self.attacks
                                                                  else "")
        return f"{head}, n = {self.n_examples}, eps = {eps_text(self.eps)}"


@dataclass
class Row:
    """One model under one protocol: its records (oldest first), merged metrics and labels."""

    row_id: str
    records: list[dict]
    metrics: dict[str, dict]
    labels: dict[str, str]
    protocol: Protocol
    rank: int | None = None
    fields: dict = field(default_factory=dict)  # identity: model, method, source, seed, ...

    @property
    def record_ids(self) -> list[str]:
        return [r["record_id"] for r in self.records]

    def value(self, metric: str) -> float | None:
        val = self.metrics.get(metric)
        return None if val is None else val.get("value")


def build_rows(records_dir: str | Path) -> dict[tuple[str, str], list[Row]]:
    """{(dataset, threat_model): rows in board order (protocol, then rank)}."""
    records = [check_record(r, records_dir) for r in latest_by_id(read_records(records_dir))]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in relink_records(records):
        groups[row_key(rec)].append(rec)
    boards: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for key, recs in groups.items():
        row = merge_records(key, recs)
        boards[(row.fields["dataset"], row.fields["threat_model"])].append(row)
    return {board: _ranked(rows) for board, rows in sorted(boards.items())}


def row_key(rec: dict) -> tuple:
    """Same test data, same weights (or, without a checksum, the same named model), same label and seed."""
    weights = rec.get("checkpoint_sha256") or f"{rec.get('source')}:{rec['model']}"
    return (rec["dataset"], rec["threat_model"], rec.get("eps"), rec.get("n_examples"), rec.get("data_sha256"),
            rec["model"], weights, rec["method"], rec.get("seed"))


def merge_records(key: tuple, records: list[dict]) -> Row:
    """One row from the records of one key: later records (``started_at``) win shared metrics and labels."""
    ordered = sorted(records, key=lambda r: (str(r.get("started_at", "")), r["record_id"]))
    metrics: dict[str, dict] = {}
    labels: dict[str, str] = {}
    for rec in ordered:
        metrics.update(rec.get("metrics", {}))
        labels.update(rec.get("labels", {}))
    same_norm = labels.get("dist_norm") in (None, key[1])  # knapsack and W-PGD in one ground norm only
    best, best_labels = best_known(metrics if same_norm else
                                   {k: v for k, v in metrics.items() if not k.startswith("w2k")})
    newest = ordered[-1]
    fields = {k: newest.get(k) for k in ("model", "method", "source", "dataset", "threat_model", "eps",
                                         "n_examples", "seed", "checkpoint_sha256", "data_sha256")}
    fields["data_file"] = Path(str(newest.get("data_file", ""))).name
    fields["training"] = next((r["training"] for r in reversed(ordered) if r.get("training")), None)
    return Row(stable_hash(list(key), 12), ordered, {**metrics, **best}, {**labels, **best_labels},
               _protocol(ordered, newest), fields=fields)


def _protocol(ordered: list[dict], newest: dict) -> Protocol:
    with_aa = [r for r in ordered if "autoattack_acc" in r.get("metrics", {})]
    n, eps = int(newest.get("n_examples") or 0), float(newest.get("eps") or 0.0)
    if not with_aa:
        return Protocol(None, (), n, eps)
    rec = with_aa[-1]
    version = rec.get("labels", {}).get("aa_version") or "standard"
    options = (rec.get("metric_options") or {}).get("autoattack") or {}
    version = version.split(":")[0]
    return Protocol(version, tuple(options.get("aa_attacks") or DEFAULT_ATTACKS.get(version, ())), n, eps)


def _ranked(rows: list[Row]) -> list[Row]:
    """Board order: protocol groups, then AutoAttack, clean accuracy, names; competition ranks per group."""
    def desc(v) -> float:
        return -float(v) if isinstance(v, (int, float)) and not math.isnan(float(v)) else math.inf

    rows = sorted(rows, key=lambda r: (r.protocol.order(), desc(r.value("autoattack_acc")),
                                       desc(r.value("clean_acc")), str(r.fields["model"]),
                                       str(r.fields["method"]), r.row_id))
    previous: tuple | None = None
    for i, row in enumerate(rows):
        aa = row.value("autoattack_acc")
        if row.protocol.aa_version is None or aa is None:
            continue
        same = previous is not None and previous[0] == row.protocol and previous[1] == aa
        row.rank = previous[2] if same else 1 + sum(r.protocol == row.protocol for r in rows[:i])
        previous = (row.protocol, aa, row.rank)
    return rows


def protocol_groups(rows: list[Row]) -> list[tuple[Protocol, list[Row]]]:
    """Consecutive rows of one protocol (``rows`` in board order)."""
    groups: list[tuple[Protocol, list[Row]]] = []
    for row in rows:
        if not groups or groups[-1][0] != row.protocol:
            groups.append((row.protocol, []))
        groups[-1][1].append(row)
    return groups
