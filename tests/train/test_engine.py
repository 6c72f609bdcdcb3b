"""The fine-tuning engine: TRADES by hand, exact resume, extension, outputs, multi-process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.methods.base import Trades
from wdro_finetune.attacks.budget_inner import WPGDBudget
from wdro_finetune.attacks.pointwise import PGD
from wdro_finetune.models import load_model
from wdro_finetune.config.finetune import make_finetune_config
from wdro_finetune.train.loop import finetune

REPO = Path(__file__).resolve().parents[2]
TINY = dict(model="mnist-smallcnn", dataset="mnist", method="trades", inner_steps=2, batch_size=16, train_subset=256,
            holdout=64, lr=0.01, seed=3, pretrained=False, schedule="constant")


def _run(tmp_path: Path, name: str, **overrides) -> Path:
    options = dict(TINY, out=str(tmp_path / name), **overrides)
    return finetune(make_finetune_config(options)).model_path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0], [-1.0, 0.0, 1.0, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_trades_per_sample_loss_matches_hand_computation():
    model = _Linear()
    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]], [[[0.9, 0.1], [0.3, 0.5]]]])
    y = torch.tensor([0, 2])
    # zero steps: x' is the TRADES start x + 0.001 N(0,1) under this generator, reproduced by hand below
    gen = torch.Generator().manual_seed(0)
    out = Trades(PGD(eps=0.1, steps=0, start="normal"), beta=6.0)(model, x, y, gen)
    noise = 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x_adv = (x + noise).clamp(0, 1)
    w, b = model.fc.weight.detach().double(), model.fc.bias.detach().double()
    for i in range(2):
        z = w @ x[i].flatten().double() + b
        z_adv = w @ x_adv[i].flatten().double() + b
        p = torch.exp(z - torch.logsumexp(z, 0))
        ce = -(z[y[i]] - torch.logsumexp(z, 0))
        kl = (p * ((z - torch.logsumexp(z, 0)) - (z_adv - torch.logsumexp(z_adv, 0)))).sum()
        assert out.per_sample[i].item() == pytest.approx((ce + 6.0 * kl).item(), rel=1e-5, abs=1e-7)
        assert out.clean_ce[i].item() == pytest.approx(ce.item(), rel=1e-6)


def test_w2_with_vanishing_delta_gives_the_clean_training_signal():
    torch.manual_seed(0)
    model = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF, pretrained=False).module.train()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    out = Trades(WPGDBudget(delta=1e-9, steps=3), beta=6.0)(model, x, y, torch.Generator().manual_seed(1))
    grad_trades = torch.autograd.grad(out.per_sample.mean(), list(model.parameters()))
    grad_clean = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for a, b in zip(grad_trades, grad_clean):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_resume_inside_an_epoch_equals_the_uninterrupted_run(tmp_path):
    full = _run(tmp_path, "full", steps=10, checkpoint_every=100)
    # interrupted after 7 steps (16 steps per epoch: inside the first epoch), then resumed to 10
    _run(tmp_path, "split", steps=7, checkpoint_every=100)
    resumed = _run(tmp_path, "split", steps=10, checkpoint_every=100, resume=True)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("inner", ["budget", "knapsack"])
def test_resume_with_more_steps_extends_a_constant_schedule_run_exactly(tmp_path, inner):
    w2 = dict(threat="w2", w2_inner=inner, checkpoint_every=3)
    longer = _run(tmp_path, "long", steps=6, **w2)
    _run(tmp_path, "short", steps=4, **w2)
    extended = _run(tmp_path, "short", steps=6, resume=True, **w2)
    a, b = _weights(longer), _weights(extended)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if inner == "knapsack":  # the maximiser changes training (so the equality above is not vacuous)
        budget = _weights(_run(tmp_path, "budget", steps=6, threat="w2", checkpoint_every=3))
        assert not all(torch.equal(a[k], budget[k]) for k in a)


def test_outputs_run_json_log_and_robustbench_layout_copy(tmp_path):
    path = _run(tmp_path, "run", steps=4, threat="w2", checkpoint_every=2)
    out = path.parent
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["label"] == "wdro-trades" and run["step"] == 4
    assert run["config"]["delta"] == pytest.approx(0.3) and run["model_sha256"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and 0 <= log[-1]["holdout_pgd10_acc"] <= 100
    loaded = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF, model_dir=out / "models")
    assert loaded.weights_path.endswith("mnist/Linf/mnist-smallcnn.pt")
    x = torch.rand(3, 1, 28, 28)
    ours = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF, checkpoint=path).module
    assert torch.equal(loaded.module(x), ours(x))
    assert len(list((out / "checkpoints").glob("step_*.pt"))) == 2


def test_starting_over_an_existing_run_without_resume_is_refused(tmp_path):
    from wdro_finetune.errors import UserError

    _run(tmp_path, "run", steps=2)
    with pytest.raises(UserError, match="--resume"):
        _run(tmp_path, "run", steps=2)
    with pytest.raises(UserError, match="differ"):
        _run(tmp_path, "run", steps=3, beta=1.0, resume=True)


@pytest.mark.parametrize("inner, port", [("budget", "29631"), ("knapsack", "29632")])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, inner, port):
    common = ["--model", "mnist-smallcnn", "--dataset", "mnist", "--no-pretrained", "--steps", "3",
              "--batch-size", "16", "--train-subset", "128", "--holdout", "32", "--inner-steps", "2",
              "--threat", "w2", "--w2-inner", inner, "--schedule", "constant", "--seed", "5",
              "--checkpoint-every", "100"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "wdro_finetune.cli", "finetune", *common, "--out",
                             str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                            "--master-port", port, "-m", "wdro_finetune.cli", "finetune", *common, "--out",
                            str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    a, b = _weights(tmp_path / "one" / "model.safetensors"), _weights(tmp_path / "two" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert not math.isnan(float(next(iter(a.values())).sum()))


def test_triplet_ia_generates_missing_positives_once_and_says_so(tmp_path, capfd, data_dir):
    from wdro_finetune.invariance.cache import CacheKey, cache_path, load_set

    options = dict(TINY, train_subset=24, holdout=16, batch_size=8, steps=2, triplet="sa+ia",
                   inv_cache=str(tmp_path / "cache"), data_dir=str(data_dir))
    first = finetune(make_finetune_config(dict(options, out=str(tmp_path / "a"))))
    assert "generating invariance examples for 24 of 24 training images" in capfd.readouterr().err
    assert first.label == "trades+triplet-sa+ia"
    log = [json.loads(line) for line in (first.out / "log.jsonl").read_text().splitlines()]
    assert log  # training ran with the term
    cached = load_set(cache_path(tmp_path / "cache", CacheKey("mnist", 0.3, "train", 60000, "fast")))
    assert sorted(cached.source_index.tolist()) == list(range(24))
    assert (cached.target_label != cached.source_label).all()
    second = finetune(make_finetune_config(dict(options, out=str(tmp_path / "b"))))
    assert "generating" not in capfd.readouterr().err  # the cache covers the images in use
    a, b = _weights(first.model_path), _weights(second.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same cached positives: same weights


def test_resume_accepts_a_run_saved_before_an_option_existed():
    from wdro_finetune.train.run_folder import check_same_run

    now = make_finetune_config(dict(TINY, out="x")).to_json()
    older = {k: v for k, v in now.items() if k != "triplet_distance"}  # saved by a version without the option
    check_same_run(older, now, Path("runs/x"), 1)
    from wdro_finetune.errors import UserError
    with pytest.raises(UserError, match="triplet_distance: 'abs-cosine' -> 'cosine'"):
        check_same_run(older, dict(now, triplet_distance="cosine"), Path("runs/x"), 1)


def test_resume_inside_an_eps_warm_up_equals_the_uninterrupted_run(tmp_path):
    ramp = dict(method="fgsm-at", eps_ramp=8, inner_step_size=0.3)
    full = _run(tmp_path, "full", steps=10, checkpoint_every=100, **ramp)
    _run(tmp_path, "split", steps=5, checkpoint_every=100, **ramp)
    resumed = _run(tmp_path, "split", steps=10, checkpoint_every=100, resume=True, **ramp)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = _weights(_run(tmp_path, "plain", steps=10, checkpoint_every=100, method="fgsm-at", inner_step_size=0.3))
    assert not all(torch.equal(a[k], plain[k]) for k in a)  # the ramp changes training
