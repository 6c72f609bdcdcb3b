"""One line of text per result, as the command line prints it."""

from __future__ import annotations


def summary_line(record: dict) -> str:
    """An evaluation record in one line: model, method, protocol, every metric (percent, with its 95% interval
    where it has one) and the record id."""
    parts = [f"{record['model']} ({record['method']}) {record['dataset']} {record['threat_model']} "
             f"eps={record['eps']:.4g} n={record['n_examples']}:"]
    for name, val in record["metrics"].items():
        ci = f" [{val['lo']:.1f}, {val['hi']:.1f}]" if val.get("lo") is not None else ""
        parts.append(f"{name}={val['value']:.2f}{ci}")
    return " ".join(parts) + f"  (record {record['record_id']})"
