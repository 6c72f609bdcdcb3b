"""``wdro-finetune demo``: the offline first-five-minutes run on the bundled MNIST model.

Fine-tunes the bundled adversarially trained ``mnist-smallcnn`` with W-DRO TRADES + ARMOR_D (KL) + the
angular triplet term (L_sa), evaluates the pretrained and the fine-tuned model (clean, AutoAttack
apgd-ce + apgd-t, W_2 at three budgets with bounds, agreement with human labels on the four packaged
invariance sets), writes records, the leaderboard CSV and the robustness-curve plot under
``<out>``, and returns the records with a short table and where every file went. Uses the bundled MNIST
subsets when the full data files are not around.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..evaluate.runner import evaluate, make_eval_config
from ..results.leaderboard import build_leaderboards
from .finetune import finetune_or_reuse

log = logging.getLogger(__name__)

FINETUNE = dict(model="mnist-smallcnn", source="builtin", dataset="mnist", threat_model="Linf", eps=0.3,
                method="trades", threat="w2", delta=0.2, w2_budget_cap=0.3, beta=6.0, inner_steps=5, reweight="armor-kl", triplet="sa",
                steps=150, batch_size=128, lr=0.001, optimizer="adamw", weight_decay=0.0, schedule="cosine",
                train_subset=5000, holdout=500, checkpoint_every=50, seed=0)
EVALUATE = dict(dataset="mnist", threat_model="Linf", eps=0.3, metrics="clean,autoattack,wdro,distances,invariance",
                inv_n=0,
                aa_version="fast", delta="0.05,0.1,0.2", wdro_steps=20, batch_size=250, seed=0)


@dataclass(frozen=True)
class DemoResult:
    """The demo's two records (pretrained, fine-tuned) and where every file went."""

    records: list[dict]
    records_file: Path
    model_path: Path
    run_log: Path
    files: list[Path]  # leaderboard CSV, README and robustness curve

    def lines(self) -> list[str]:
        """The short table, then one line per output file."""
        return _table(self.records) + [
            f"records:     {self.records_file}",
            f"fine-tuned:  {self.model_path}  (run log {self.run_log})",
            *(f"leaderboard: {path}" for path in self.files)]


def run_demo(out: str | Path, n_examples: int = 500, progress: bool = False) -> DemoResult:
    """Run the demo into ``out``; an existing finished demo run is reused (rerun = same records)."""
    out = Path(out)
    records_dir = out / "records"
    common = dict(EVALUATE, n_examples=n_examples, records=str(records_dir))
    records = [evaluate(make_eval_config(dict(common, model="mnist-smallcnn", source="builtin")),
                        progress=progress).record]
    run_dir = out / "finetune"
    model_path = run_dir / "model.safetensors"
    cfg, label = finetune_or_reuse(dict(FINETUNE, out=str(run_dir)), progress=progress)
    records.append(evaluate(make_eval_config(dict(common, model="mnist-smallcnn", source="builtin",
                                                  checkpoint=str(model_path), method=label,
                                                  training=cfg.to_json())), progress=progress).record)
    files = build_leaderboards(records_dir, out / "leaderboards")  # CSV, README and the robustness curve
    return DemoResult(records, records_dir / "records.jsonl", model_path, run_dir / "log.jsonl", files)


def _table(records: list[dict]) -> list[str]:
    deltas = [k.split("@")[1] for k in records[0]["metrics"] if k.startswith("w2_best_acc@")]
    head = f"{'method':<36} {'clean':>7} {'AutoAttack':>11}" + "".join(f" {'W2@' + d:>9}" for d in deltas) + \
        f" {'human@0.3':>10}"
    lines = [head]
    for rec in records:
        m = rec["metrics"]
        row = f"{rec['method']:<36} {m['clean_acc']['value']:>6.2f}% {m['autoattack_acc']['value']:>10.2f}%"
        row += "".join(f" {m['w2_best_acc@' + d]['value']:>8.2f}%" for d in deltas)
        row += f" {m['inv_human_linf03_agree']['value']:>9.2f}%"
        lines.append(row)
    lines.append(f"(n = {records[0]['n_examples']} MNIST test images, eps = 0.3, AutoAttack apgd-ce + apgd-t; W2@d = "
                 "best-known W_2 accuracy, the lower of W-PGD and the knapsack over minimal distances; human@0.3 = "
                 "agreement with human labels on the 100 l_inf eps 0.3 invariance examples)")
    return lines
