"""``wdro-finetune demo``: the offline first-five-minutes run on the bundled MNIST model."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import Dataset, ThreatModel
from .evaluate.runner import EvalConfig, evaluate
from .results.leaderboard import build_leaderboards

log = logging.getLogger(__name__)


def run_demo(out: str | Path, n_examples: int = 500, progress: bool = False) -> list[dict]:
    """Evaluate the bundled ``mnist-smallcnn`` (clean + AutoAttack apgd-ce/apgd-t at eps 0.3), write
    records under ``<out>/records`` and leaderboards under ``<out>/leaderboards``; print a table."""
    out = Path(out)
    config = EvalConfig(model="mnist-smallcnn", dataset=Dataset.MNIST, threat_model=ThreatModel.LINF, eps=0.3,
                        n_examples=n_examples, metrics=("clean", "autoattack"),
                        metric_options={"autoattack": {"aa_version": "fast", "aa_attacks": ["apgd-ce", "apgd-t"]}},
                        source="builtin", records=str(out / "records"), batch_size=500)
    result = evaluate(config, progress=progress)
    files = build_leaderboards(out / "records", out / "leaderboards")
    rec = result.record
    print(f"{'model':<16} {'method':<12} {'clean':>8} {'AutoAttack':>11}  n")
    print(f"{rec['model']:<16} {rec['method']:<12} {rec['metrics']['clean_acc']['value']:>7.2f}% "
          f"{rec['metrics']['autoattack_acc']['value']:>10.2f}%  {rec['n_examples']}")
    print(f"records: {out / 'records' / 'records.jsonl'}")
    for path in files:
        print(f"leaderboard: {path}")
    return [rec]
