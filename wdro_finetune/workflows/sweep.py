"""Idempotent sweeps: a YAML grid of models x methods x seeds, each job keyed by the hash of its
resolved configuration. Done jobs (a record with that ``job_id`` exists) are skipped, a killed sweep
continues where it stopped (fine-tuning resumes from its checkpoints, evaluation from its per-chunk
state), and ``--shard i/n`` runs every n-th job so shards need no coordinator; all shards append to
the same records file under a lock.

File format::

    records: records                   # where records go (paths relative to this file's folder)
    runs: ../runs/sweep                # fine-tuning outputs, one folder per job
    models: [mnist-smallcnn]
    seeds: [0, 1, 2]
    common: {dataset: mnist, threat_model: Linf, data_dir: null}     # options shared by both steps
    evaluate: {metrics: "clean,autoattack,wdro", n_examples: 1000, aa_version: standard}
    methods:
      - name: pretrained               # evaluate the model as it is
        seeds: [0]                     # optional per-method override
      - name: wdro-trades
        finetune: {method: trades, threat: w2, steps: 300, lr: 0.01}
        evaluate: {aa_version: fast}   # merged over the top-level evaluate options
      - name: pretrained
        models: [cifar10-resnet-small]  # per-method models, seeds and common options
        common: {dataset: cifar10, eps: 8/255}
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import Interrupted, UserError
from ..results.records import prune_records, read_records, stable_hash
from ..utils.fileio import file_lock
from .options import SweepOptions
from .report import summary_line

log = logging.getLogger(__name__)

_TOP_KEYS = {"records", "runs", "models", "seeds", "common", "evaluate", "methods", "name", "description"}
_METHOD_KEYS = {"name", "finetune", "evaluate", "seeds", "models", "common"}
OWNED_KEYS = ("records", "out", "job_id", "resume", "training")  # set by the sweep for every job
OWNED_BY_FINETUNED_EVAL = ("checkpoint", "method")  # the evaluation of a fine-tuned job: its run's model and label
# resolved relative to the sweep file
PATH_OPTIONS = ("data_dir", "model_dir", "checkpoint", "inv_cache", "precomputed_source")


@dataclass(frozen=True)
class Job:
    """One (model, method, seed) cell of the grid with its fully resolved options."""

    job_id: str
    model: str
    method: str
    seed: int
    finetune: dict[str, Any] | None
    evaluate: dict[str, Any]

    def describe(self) -> str:
        return f"{self.job_id}  {self.model:<24} {self.method:<28} seed={self.seed}"


@dataclass(frozen=True)
class Sweep:
    records: Path
    runs: Path
    jobs: list[Job]


def load_sweep(path: str | Path, check_device: bool = True) -> Sweep:
    """Parse and validate a sweep file into its jobs (sorted by job id). ``check_device=False`` validates
    everything but the device's presence (a GPU sweep can be listed on a CPU machine)."""
    spec = _read(Path(path))
    base = Path(path).parent
    records, runs = (relative_to(base, spec.get(k, d)) for k, d in (("records", "results"), ("runs", "runs/sweep")))
    jobs = []
    for method in spec["methods"]:
        for model in method.get("models", spec["models"]):
            for seed in method.get("seeds", spec.get("seeds", [0])):
                jobs.append(_job(spec, method, str(model), int(seed), runs, base))
    ids = [j.job_id for j in jobs]
    if len(set(ids)) != len(ids):
        raise UserError(f"sweep file {path} lists the same job twice")
    for job in jobs:
        _check_job(job, path, check_device)
    return Sweep(records, runs, sorted(jobs, key=lambda j: j.job_id))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"sweep file {path} is malformed: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise UserError(f"sweep file {path} is not UTF-8 text") from None
    if not isinstance(spec, dict) or not spec.get("methods") or not (spec.get("models") or all(
            isinstance(m, dict) and m.get("models") for m in spec.get("methods") or [])):
        raise UserError(f"sweep file {path} needs 'models' and a non-empty 'methods' list")
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise UserError(f"sweep file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(spec["methods"], list):
        raise UserError(f"sweep file {path}: 'methods' must be a list")
    for method in spec["methods"]:
        if not isinstance(method, dict) or "name" not in method or set(method) - _METHOD_KEYS:
            raise UserError(f"sweep file {path}: each method needs a 'name' and only {sorted(_METHOD_KEYS)}")
    for where, part in [("", spec)] + [(f"method {m['name']!r}: ", m) for m in spec["methods"]]:
        _check_types(path, where, part)
        _check_owned_keys(path, where, part, fine_tuned=bool(part.get("finetune")) or not where and any(
            m.get("finetune") for m in spec["methods"]))
    return spec


def _check_owned_keys(path: Path, where: str, part: dict, fine_tuned: bool) -> None:
    """Options the sweep sets itself are refused in job options (they would be ignored without a word)."""
    for key in ("common", "evaluate", "finetune"):
        owned = set(OWNED_KEYS) | (set(OWNED_BY_FINETUNED_EVAL) if key == "evaluate" and fine_tuned else set())
        given = sorted(owned & {str(k).replace("-", "_") for k in (part.get(key) or {})})
        if given:
            raise UserError(f"sweep file {path}: {where}'{key}' sets {', '.join(given)}, which the sweep sets "
                            f"itself (records: the top-level 'records'; out: 'runs'/<job id>); remove it")


def _check_types(path: Path, where: str, part: dict) -> None:
    """Strings, lists of names / integer seeds and option mappings where the format has them."""
    def fail(key: str, what: str) -> None:
        raise UserError(f"sweep file {path}: {where}'{key}' must be {what}, got {part[key]!r}")

    for key in ("records", "runs", "name", "description"):
        if key in part and not isinstance(part[key], str):
            fail(key, "a string")
    if "models" in part and not (isinstance(part["models"], list) and part["models"]
                                 and all(isinstance(m, str) and m for m in part["models"])):
        fail("models", "a non-empty list of model names")
    if "seeds" in part and not (isinstance(part["seeds"], list) and part["seeds"]
                                and all(isinstance(v, int) and not isinstance(v, bool) for v in part["seeds"])):
        fail("seeds", "a non-empty list of integers")
    for key in ("common", "evaluate", "finetune"):
        if part.get(key) is not None and not isinstance(part[key], dict):
            fail(key, "a mapping of option names to values")


def _check_job(job: Job, path: Path, check_device: bool = True) -> None:
    """Every job's options are validated before any job runs: a typo fails the sweep at once, not hours in."""
    if not check_device:
        job = dataclasses.replace(job, evaluate={**job.evaluate, "device": "cpu"},
                                  finetune=job.finetune and {**job.finetune, "device": "cpu"})
    from ..config import check_known_keys
    from ..evaluate.runner import make_eval_config, option_names
    from ..config.finetune import finetune_fields
    from .finetune import make_finetune_run

    try:
        if not job.evaluate.get("dataset"):
            raise UserError("no dataset (set it in 'common' or 'evaluate')")
        check_known_keys(job.evaluate, option_names(), "evaluate options")
        make_eval_config(job.evaluate, shared_options=True)
        if job.finetune is not None:
            check_known_keys(job.finetune, set(finetune_fields()), "finetune options")
            make_finetune_run(job.finetune)
    except UserError as exc:
        raise UserError(f"sweep file {path}, job {job.model} / {job.method} / seed {job.seed}: {exc}") from None


def relative_to(base: Path, path: str | Path) -> Path:
    """``path`` as written in a sweep file in folder ``base``: relative paths are relative to that folder
    (normalised, so ``leaderboards/../runs`` reads ``runs``); absolute paths stay as they are."""
    path = Path(path)
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _resolve_paths(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """Path-valued job options relative to the sweep file's folder (after hashing: the job id keeps the path
    as written, so moving a sweep file with its folder keeps its job ids)."""
    return {k: str(relative_to(base, v)) if k in PATH_OPTIONS and isinstance(v, str) else v for k, v in options.items()}


def _job(spec: dict, method: dict, model: str, seed: int, runs: Path, base: Path = Path(".")) -> Job:
    from ..evaluate.runner import canonical_options  # ``deltas:`` is ``delta:`` (and hashes so)

    common = {**(spec.get("common") or {}), **(method.get("common") or {})}
    evaluate = {**common, **canonical_options(spec.get("evaluate") or {}),
                **canonical_options(method.get("evaluate") or {}), "model": model, "seed": seed}
    finetune = None
    if method.get("finetune") is not None:
        finetune = {**common, **method["finetune"], "model": model, "seed": seed}
    identity = {"model": model, "method": method["name"], "seed": seed, "finetune": _identity_options(finetune),
                "evaluate": evaluate}
    job_id = stable_hash(identity, 12)
    if finetune is not None:
        finetune = dict(_resolve_paths(finetune, base), out=str(runs / job_id))
    return Job(job_id, model, method["name"], seed, finetune, _resolve_paths(evaluate, base))


def _identity_options(finetune: dict | None) -> dict | None:
    """The fine-tune options as a job id hashes them: as written, except the W_2 budget cap, whose default
    changed from uncapped to eps. ``w2_budget_cap: none`` (uncapped) hashes as the key's absence did before,
    so sweeps written before keep their job ids once they spell the old default out; a W_2 job that leaves
    the cap out (the new default) hashes with a marker, so it never shares an id with an old uncapped job."""
    if finetune is None or finetune.get("threat") != "w2":
        return finetune
    cap = finetune.get("w2_budget_cap")
    if isinstance(cap, str) and cap.strip().lower() == "none":
        return {k: v for k, v in finetune.items() if k != "w2_budget_cap"}
    return finetune if cap is not None else {**finetune, "w2_budget_cap": "default: max(eps, delta)"}


def parse_shard(text: str | None) -> tuple[int, int]:
    """``i/n`` (1-based) -> (i, n); None -> (1, 1)."""
    if not text:
        return 1, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like 2/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise UserError(f"--shard {text}: need 1 <= i <= n")
    return i, n


def shard_jobs(sweep: Sweep, shard: tuple[int, int] = (1, 1), job_ids: list[str] | None = None) -> list[Job]:
    """Every n-th job of the grid (``shard`` = (i, n), 1-based; of ``job_ids`` only, if given), done or not."""
    unknown = sorted(set(job_ids or ()) - {job.job_id for job in sweep.jobs})
    if unknown:
        raise UserError(f"no job {', '.join(unknown)} in the sweep (`sweep FILE --dry-run` lists the pending ones)")
    i, n = shard
    return [job for k, job in enumerate(sweep.jobs) if k % n == i - 1 and (not job_ids or job.job_id in job_ids)]


def pending_jobs(sweep: Sweep, shard: tuple[int, int] = (1, 1), job_ids: list[str] | None = None) -> list[Job]:
    """This shard's jobs (of ``job_ids`` only, if given) that have no record yet."""
    done = _done_job_ids(sweep.records)
    return [job for job in shard_jobs(sweep, shard, job_ids) if job.job_id not in done]


def sweep_ref(path: str | Path):
    """The sweep file as the leaderboard site's reproducing commands name it, with its job ids."""
    from ..results.site import SweepRef

    return SweepRef(str(path), frozenset(job.job_id for job in load_sweep(path, check_device=False).jobs))


def run_pending_job(job: Job, sweep: Sweep, progress: bool = False) -> dict | None:
    """Run ``job`` unless its record appeared since the job list was made (another process, e.g. a
    shard of a different ``n``, finished it). A per-job lock file in ``sweep.runs`` keeps two processes
    from running the same job at once: the second waits, then finds the record. ``None`` = skipped."""
    with file_lock(sweep.runs / f"{job.job_id}.lock"):
        if job.job_id in _done_job_ids(sweep.records):
            return None
        return run_job(job, sweep.records, progress)


def _done_job_ids(records: Path) -> set[str]:
    return {r.get("job_id") for r in read_records(records)}


def run_job(job: Job, records: Path, progress: bool = False) -> dict:
    """Fine-tune (resuming if a previous attempt left checkpoints), then evaluate; returns the record."""
    from ..evaluate.runner import evaluate, make_eval_config
    from .finetune import finetune_or_reuse

    options = copy.deepcopy(job.evaluate)
    options.update(records=str(records), job_id=job.job_id)
    if job.finetune is not None:
        ft_cfg, label = finetune_or_reuse(job.finetune, progress=progress)
        options.update(method=label, checkpoint=str(Path(ft_cfg.out) / "model.safetensors"),
                       training=ft_cfg.to_json())
        if ft_cfg.source:
            options["source"] = ft_cfg.source
    return evaluate(make_eval_config(options, shared_options=True), progress=progress).record


@dataclass(frozen=True)
class SweepRun:
    """What :func:`run_sweep` did: ``jobs`` the jobs that were pending (run, or listed by a dry run),
    ``records`` the record of each job run (None: another process did it meanwhile), ``done_before`` the jobs
    of the shard that had a record already."""

    records_dir: Path
    jobs: list[Job]
    records: list[dict | None]
    done_before: int
    dry_run: bool
    pruned: list[dict] | None = None  # --prune: the records removed (with --dry-run: to remove)

    def summary(self) -> str:
        if self.pruned is not None:
            return f"{len(self.pruned)} superseded records {'to remove' if self.dry_run else 'removed'}"
        if self.dry_run:
            return f"{len(self.jobs)} jobs to run"
        return f"{len(self.jobs)} jobs done; records in {self.records_dir}"


def run_sweep(options: SweepOptions, *, progress: bool = False,
              report: Callable[[str], None] | None = None) -> SweepRun:
    """Run the pending jobs of sweep ``file`` (of shard ``i/n`` and of the ids ``job`` only, if given), or with
    ``dry_run`` only list them; ``report`` gets a line as each job starts and ends (default: the log)."""
    report = report or log.info
    sweep = load_sweep(options.file, check_device=not (options.dry_run or options.prune))
    if options.prune:
        pruned = prune_records(sweep.records, {job.job_id for job in sweep.jobs}, dry_run=options.dry_run)
        for rec in pruned:
            report(f"{rec['record_id']}  job {rec['job_id']}  {rec.get('model')} / {rec.get('method')}")
        return SweepRun(sweep.records, [], [], 0, options.dry_run, pruned)
    shard = parse_shard(options.shard)
    ids = [options.job] if isinstance(options.job, str) else options.job
    jobs = pending_jobs(sweep, shard, ids)
    done = len(shard_jobs(sweep, shard, ids)) - len(jobs)
    if done:
        report(f"{done} jobs already done (records in {sweep.records})")
    if options.dry_run:
        for job in jobs:
            report(job.describe())
        return SweepRun(sweep.records, jobs, [], done, True)
    records = []
    for k, job in enumerate(jobs, 1):
        report(f"[{k}/{len(jobs)}] {job.describe()}")
        try:
            record = run_pending_job(job, sweep, progress=progress)
        except Interrupted:
            raise Interrupted(f"sweep interrupted in job {job.job_id}, its progress saved; run the same sweep "
                              "command again to continue") from None
        report(summary_line(record) if record else "  done meanwhile by another process; skipped")
        records.append(record)
    return SweepRun(sweep.records, jobs, records, done, False)
