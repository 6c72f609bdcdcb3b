"""The fine-tuning engine: :func:`finetune` runs a :class:`FinetuneConfig` end to end.

Every random choice of a step (batch order, augmentation, attack start, dropout) is seeded from
(seed, step, rank), so a run resumed from a checkpoint produces exactly the weights of an
uninterrupted run on the CPU. Outputs in ``<out>``: ``model.safetensors``, a RobustBench-layout copy
``models/<dataset>/<threat_model>/<name>.pt``, ``run.json`` (status running, interrupted, diverged, evaluating or
finished), ``config.yaml`` (the resolved options, reusable with ``--config``), ``log.jsonl`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..attacks.pointwise import PGD
from ..errors import Interrupted, UserError
from ..methods.factory import build_objective
from ..methods.parts import REGULARIZERS
from ..models import LoadedModel, load_model
from ..models.checkpoint import save_robustbench_layout, save_safetensors
from ..results.provenance import git_commit, package_versions, utc_now
from ..models.outputs import check_split, predict
from ..utils.progress import progress_bar
from ..utils.fileio import (append_line_locked, atomic_write_text, check_output_paths, ensure_writable_dir,
                             exclusive_dir, sha256_file)
from .checkpoints import checkpoint_dir, discard_checkpoint, load_latest_checkpoint, save_checkpoint
from ..config.finetune import FinetuneConfig
from ..data.training import TrainStream, augments, load_train_data, step_seed
from ..config.saved_run import CONFIG_FILE, config_yaml, read_run
from .run_folder import check_same_run, is_finished, output_paths
from ..distributed import DistInfo, barrier, init_distributed, mean_over_ranks, unwrap, wrap_model
from .schedule import build_optimizer, build_scheduler
from .sensitivity_store import stored_examples

log = logging.getLogger(__name__)
_HOLDOUT_CHECK = 256  # held-out training images used by the per-epoch PGD check


class TrainingInterrupted(Interrupted):
    """Ctrl-C: the current step finished and a checkpoint was written."""


class TrainingDiverged(UserError):
    """A non-finite loss; no checkpoint of that step is kept (its weights gave that loss)."""


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    label: str
    steps: int
    model_path: Path
    records: list[dict]
    already_finished: bool = False  # --resume of a run that had finished: nothing was done


# After training, before the run counts as finished: (model, method label, training options) -> records.
AfterTraining = Callable[[LoadedModel, str, dict], list[dict]]


def finetune(cfg: FinetuneConfig, *, progress: bool = False, after: AfterTraining | None = None,
             more_outputs: tuple[list[Path], list[Path]] = ([], [])) -> FinetuneResult:
    """Fine-tune ``cfg.model`` as configured; resume from ``<out>/checkpoints`` if ``cfg.resume`` (a finished run
    of the same length: nothing to do, nothing rewritten). The run folder is locked while the run lasts: a
    second run with the same ``out`` is refused at once. ``after`` runs on the trained model (the
    ``--eval-after`` evaluation of :mod:`wdro_finetune.workflows.finetune`; the run is "finished" only once it
    returned), ``more_outputs`` are the (folders, files) it writes, checked before training starts."""
    if cfg.eval_after and after is None:
        raise ValueError("--eval-after runs in wdro_finetune.workflows.finetune.finetune, not in the engine")
    dist_info = init_distributed(cfg.device)
    out = Path(cfg.out)
    if not dist_info.is_main:
        return _finetune(cfg, out, dist_info, progress, after)
    folders, files = output_paths(cfg)
    check_output_paths(folders + more_outputs[0], files + more_outputs[1])  # fail before any download; create
    # nothing until the inputs are loaded
    run = read_run(out)
    if cfg.resume and is_finished(cfg, run):
        check_same_run(run["config"], cfg.to_json(), out, int(run["step"]))
        log.info("the run in %s already finished at step %d; nothing to do", out, run["step"])
        return FinetuneResult(out, run["label"], run["step"], out / "model.safetensors", [], already_finished=True)
    with exclusive_dir(out):
        return _finetune(cfg, out, dist_info, progress, after)


def _finetune(cfg: FinetuneConfig, out: Path, dist_info: DistInfo, progress: bool,
              after: AfterTraining | None) -> FinetuneResult:
    saved = _resume_state(cfg, out)
    torch.manual_seed(cfg.seed)
    base = load_model(cfg.model, cfg.dataset, cfg.threat_model, source=cfg.source, checkpoint=cfg.checkpoint,
                      model_dir=cfg.model_dir, pretrained=cfg.pretrained, trust_checkpoint=cfg.trust_checkpoint,
                      init_seed=cfg.seed)
    module = base.module
    apply_init(module, cfg.init, cfg.seed)  # also on --resume: the starting weights identify stored examples
    train, holdout = load_train_data(cfg.dataset, cfg.train_subset, cfg.holdout, cfg.data_dir)
    check_split(module, train, "cpu", cfg.model)  # before any step: NaN weights, wrong class count
    stream = TrainStream(train.x, train.y, cfg.batch_size, cfg.seed, augments(cfg.dataset), dist_info.rank,
                         dist_info.world)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * stream.steps_per_epoch
    module.to(cfg.device)
    objective = build_objective(cfg, _inv_positives(cfg, len(train), dist_info),
                                stored_examples(cfg, module, train, out, dist_info, progress))
    objective.to(cfg.device)
    if _channels_last(cfg):
        module.to(memory_format=torch.channels_last)
    extra = [{"params": objective.aggregator.learned_parameters(), "lr": cfg.armor_lr or cfg.lr}] \
        if objective.aggregator.learned_parameters() else []
    optimizer = build_optimizer(cfg, module, extra)
    scheduler = build_scheduler(cfg, optimizer, total)
    start = 0
    if saved is not None:
        start = _restore(saved, module, objective, optimizer, scheduler, cfg)
    model = wrap_model(module, dist_info, cfg.device)
    run = _Run(cfg, out, dist_info, model, objective, optimizer, scheduler, stream, holdout, total, base, progress,
               after)
    if dist_info.is_main:
        ensure_writable_dir(out)
        atomic_write_text(out / CONFIG_FILE, config_yaml(cfg))
        run.write_run_json("running", start)
    try:
        run.train(start)
    except (KeyboardInterrupt, Interrupted, TrainingDiverged) as exc:
        if dist_info.is_main:
            run.write_run_json("diverged" if isinstance(exc, TrainingDiverged) else "interrupted", run.step)
        raise
    return run.finish()


def apply_init(model: nn.Module, init: str, seed: int) -> None:
    """``continue`` (as is), ``reinit-head`` (re-initialise the last nn.Linear) or ``perturb:SIGMA``
    (w += SIGMA * std(w) * N(0, 1) for every weight tensor)."""
    gen = torch.Generator().manual_seed(seed)
    if init == "reinit-head":
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UserError("--init reinit-head needs a model whose last layer is an nn.Linear")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            linears[-1].reset_parameters()
    elif init.startswith("perturb:"):
        sigma = float(init.split(":", 1)[1])
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1:
                    p.add_(sigma * p.std() * torch.randn(p.shape, generator=gen).to(p))


def _inv_positives(cfg: FinetuneConfig, n_train: int, info: DistInfo) -> torch.Tensor | None:
    """Invariance examples of the training images for L_ia (None unless --triplet ia / sa+ia); every rank
    loads them (the cache's lock lets one process generate what is missing)."""
    if not REGULARIZERS.get(cfg.triplet).needs_positives():
        return None
    from ..invariance.positives import training_positives

    return training_positives(cfg.dataset, cfg.threat_model, n_train, cfg.eps, cfg.inv_cache, cfg.data_dir,
                              announce=info.is_main)


def _channels_last(cfg: FinetuneConfig) -> bool:
    return cfg.channels_last if cfg.channels_last is not None else cfg.device.startswith("cuda")


def _resume_state(cfg: FinetuneConfig, out: Path) -> dict | None:
    found = load_latest_checkpoint(out)
    if not cfg.resume:
        if found is not None:
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return None
    if found is None:
        raise UserError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    state, path = found
    check_same_run(state["config"], cfg.to_json(), out, int(state["step"]))
    log.info("resuming from %s (step %d)", path, state["step"])
    return state


def _restore(saved: dict, module, objective, optimizer, scheduler, cfg: FinetuneConfig) -> int:
    module.load_state_dict(saved["model"])
    objective.load_state_dict(saved["objective"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if saved["config"].get("lr") != cfg.lr:  # e.g. lowered after a divergence
        scale = cfg.lr / saved["config"]["lr"]
        scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
        for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
            group["initial_lr"] = base_lr
            group["lr"] = base_lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
    return int(saved["step"])


class _Run:
    """State of one training run (kept out of the public API)."""

    def __init__(self, cfg, out, dist_info: DistInfo, model, objective, optimizer, scheduler, stream: TrainStream,
                 holdout, total: int, base: LoadedModel, progress: bool, after: AfterTraining | None = None):
        self.cfg, self.out, self.dist, self.model, self.objective = cfg, out, dist_info, model, objective
        self.after = after
        self.optimizer, self.scheduler, self.stream, self.holdout = optimizer, scheduler, stream, holdout
        self.total, self.base, self.progress = total, base, progress and dist_info.is_main
        self.step, self.t0, self.started = 0, time.perf_counter(), utc_now()
        self.interrupt_requested = False

    # ------------------------------------------------------------------ loop
    def train(self, start: int) -> None:
        self.step = start
        with self._sigint_finishes_step(), progress_bar(self.total, self.objective.label, self.progress,
                                                        initial=start, unit="step", dynamic_ncols=True) as bar:
            while self.step < self.total:
                stats = self._one_step()
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['clean_acc']:.2f}",
                                adv=f"{stats['adv_acc']:.2f}", img_s=f"{stats['img_per_s']:.0f}")
                if self.step % self.stream.steps_per_epoch == 0 or self.step == self.total:
                    self._epoch_end(stats)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.total:
                    self._checkpoint()
                if self.interrupt_requested:
                    self._checkpoint()
                    raise TrainingInterrupted(f"interrupted at step {self.step}; checkpoint written to "
                                              f"{self.out / 'checkpoints'}; continue with --resume")

    def _one_step(self) -> dict[str, float]:
        t = time.perf_counter()
        seed = step_seed(self.cfg.seed, self.step, self.dist.rank)
        torch.manual_seed(seed)
        generator = torch.Generator(device=self.cfg.device).manual_seed(seed)
        x, y = self.stream.batch(self.step)
        index = self.stream.indices(self.step)
        x, y = x.to(self.cfg.device), y.to(self.cfg.device)
        if _channels_last(self.cfg):
            x = x.contiguous(memory_format=torch.channels_last)
        self.model.train()
        self.objective.set_step(self.step)
        with self._autocast():
            result = self.objective(self.model, x, y, generator, index)
        if not torch.isfinite(result.loss):
            raise TrainingDiverged(self._diverged_message())
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(unwrap(self.model).parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            clean_acc = (result.out.logits_clean.argmax(1) == y).float().mean().item()
            adv_acc = (result.out.logits_adv.argmax(1) == y).float().mean().item()
        return dict(result.stats, loss=result.loss.item(), clean_acc=clean_acc, adv_acc=adv_acc,
                    img_per_s=len(y) * self.dist.world / max(1e-9, time.perf_counter() - t))

    def _diverged_message(self) -> str:
        """A checkpoint of this very step holds the weights that gave the non-finite loss: resuming from it
        would fail again at any learning rate, so it is deleted and ``latest`` names the one before."""
        good = discard_checkpoint(self.out, self.step) if self.dist.is_main else None
        if good is None and self.dist.is_main:
            return (f"non-finite loss at step {self.step} and no earlier checkpoint to resume from: "
                    f"lower --lr and start again")
        return (f"non-finite loss at step {self.step}; the last good checkpoint is {good or self.out / 'checkpoints'}"
                f": lower --lr and continue with --resume")

    def _autocast(self):
        amp = self.cfg.amp if self.cfg.amp is not None else self.cfg.device.startswith("cuda")
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp and self.cfg.device.startswith("cuda") \
            else nullcontext()

    @contextmanager
    def _sigint_finishes_step(self) -> Iterator[None]:
        """First Ctrl-C: finish the step, write a checkpoint, stop. Second: stop at once."""
        if not self.dist.is_main or not _in_main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupt_requested:
                raise KeyboardInterrupt
            self.interrupt_requested = True
            log.warning("Ctrl-C: finishing step %d and writing a checkpoint (Ctrl-C again to abort)", self.step)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # ------------------------------------------------------------------ bookkeeping
    def _epoch_end(self, stats: dict[str, float]) -> None:
        """Quick PGD check on held-out TRAINING images (never the test set); logged to log.jsonl."""
        entry = {"step": self.step, "epoch": self.step / self.stream.steps_per_epoch,
                 "lr": self.optimizer.param_groups[0]["lr"], "time": utc_now(),
                 **{k: mean_over_ranks(v, self.dist) for k, v in sorted(stats.items())}}
        entry.update(self._holdout_check())
        for name, value in self.objective.aggregator.stats().items():
            entry[f"reweight_{name}"] = float(value)
        cap_hits = self.objective.aggregator.reset_epoch()
        if cap_hits:
            entry["reweight_cap_hits"] = cap_hits
        if self.dist.is_main:
            append_line_locked(self.out / "log.jsonl", json.dumps(entry, sort_keys=True))

    def _holdout_check(self) -> dict[str, float]:
        if len(self.holdout) == 0:
            return {}
        module = unwrap(self.model)
        x, y = self.holdout.x[:_HOLDOUT_CHECK].to(self.cfg.device), self.holdout.y[:_HOLDOUT_CHECK].to(self.cfg.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            x_adv = PGD(eps=self.cfg.eps, norm=self.cfg.threat_model.value, steps=10,
                        step_size=self.cfg.eps / 4)(module, x, y)
        was_training = module.training
        module.eval()
        clean = (predict(module, x, self.cfg.device, 256) == y.cpu()).float().mean().item()
        robust = (predict(module, x_adv, self.cfg.device, 256) == y.cpu()).float().mean().item()
        module.train(was_training)
        return {"holdout_clean_acc": 100 * clean, "holdout_pgd10_acc": 100 * robust}

    def _checkpoint(self) -> None:
        if not self.dist.is_main:
            barrier(self.dist)
            return
        state = {"step": self.step, "model": unwrap(self.model).state_dict(),
                 "objective": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "config": self.cfg.to_json(),
                 "rng_torch": torch.get_rng_state()}
        save_checkpoint(self.out, state, self.step)
        barrier(self.dist)

    def write_run_json(self, status: str, step: int, extra: dict | None = None) -> None:
        data = {"status": status, "label": self.objective.label, "step": step, "total_steps": self.total,
                "config": self.cfg.to_json(), "base_model": {"name": self.base.name, "source": self.base.source,
                                                             "weights": self.base.weights_path,
                                                             "sha256": self.base.weights_sha256},
                "train_data": {"file": self.holdout.file, "sha256": self.holdout.sha256,
                               "n_train": len(self.stream.y), "n_holdout": len(self.holdout)},
                "world_size": self.dist.world, "versions": package_versions(), "git_commit": git_commit(),
                "started_at": self.started, **(extra or {})}
        atomic_write_text(self.out / "run.json", json.dumps(data, indent=2, sort_keys=True) + "\n")

    def finish(self) -> FinetuneResult:
        module = unwrap(self.model).eval()
        model_path = self.out / "model.safetensors"
        records: list[dict] = []
        if self.dist.is_main:
            save_safetensors(module, model_path, {"label": self.objective.label, "base": self.cfg.model})
            layout = save_robustbench_layout(module, self.out / "models", self.cfg.dataset.value,
                                             self.cfg.threat_model.value, self.cfg.model)
            wall = time.perf_counter() - self.t0
            done = {"finished_at": utc_now(), "wall_seconds": round(wall, 3), "model_sha256": sha256_file(model_path),
                    "robustbench_sha256": sha256_file(layout)}
            if self.after is not None:  # "finished" only once the evaluation is in: a killed one is resumed
                self.write_run_json("evaluating", self.step, done)
                loaded = LoadedModel(module, self.cfg.model, self.base.source, str(model_path), done["model_sha256"])
                with torch.random.fork_rng(devices=[]):
                    records = self.after(loaded, self.objective.label, {**self.cfg.to_json(), "steps_done": self.step})
            self.write_run_json("finished", self.step, done)
        barrier(self.dist)
        return FinetuneResult(self.out, self.objective.label, self.step, model_path, records)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
