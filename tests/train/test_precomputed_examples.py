"""``--inner-examples precomputed-fgsm``: the stored examples are a fresh FGSM of the starting model, training
uses them (and nothing else changes), a killed-and-resumed run equals an uninterrupted one, bad combinations
are one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from wdro_finetune.attacks.pointwise import FGSM
from wdro_finetune.attacks.stored import StoredExamples
from wdro_finetune.cli import main
from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.config.finetune import make_finetune_config
from wdro_finetune.data.training import load_train_data
from wdro_finetune.errors import UserError
from wdro_finetune.methods.factory import build_objective
from wdro_finetune.models import load_model
from wdro_finetune.train.loop import apply_init, finetune
from wdro_finetune.train.sensitivity_store import FILE, made_from, write_examples

EPS = 0.05
TINY = dict(model="mnist-smallcnn", dataset="mnist", method="fgsm-at", inner_examples="precomputed-fgsm",
            precomputed_eps=EPS, batch_size=16, train_subset=96, holdout=16, lr=0.01, seed=3, pretrained=False,
            schedule="constant", checkpoint_every=100)


def _run(tmp_path: Path, name: str, **overrides):
    return finetune(make_finetune_config(dict(TINY, out=str(tmp_path / name), **overrides)))


def _start_model(seed: int = 3, init: str = "continue") -> torch.nn.Module:
    """The starting weights as the engine makes them (seed, random init, --init)."""
    torch.manual_seed(seed)
    module = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF, pretrained=False, init_seed=seed).module
    apply_init(module, init, seed)
    return module


def _stored(out: Path) -> torch.Tensor:
    return load_file(str(out / FILE))["x"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_stored_examples_are_a_fresh_fgsm_of_the_starting_model(tmp_path, capfd):
    result = _run(tmp_path, "run", steps=3)
    assert "making the FGSM examples (eps 0.05) of the 96 training images" in capfd.readouterr().err
    train, _ = load_train_data(Dataset.MNIST, 96, 16, None)
    start = _start_model()
    fresh = FGSM(eps=EPS)(start, train.x, train.y)  # one call: the store's batching (500) covers the 96
    stored = _stored(result.out)
    assert torch.equal(stored, fresh)
    assert (stored - train.x).abs().amax().item() == pytest.approx(EPS, abs=1e-6)  # on the sphere, not clean
    with safe_open(str(result.out / FILE), framework="pt") as fh:
        assert fh.metadata() == made_from(start, train, EPS, "Linf")
    # the trained weights give other FGSM examples: the stored ones are the starting model's
    trained = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF, checkpoint=result.model_path).module
    assert not torch.equal(FGSM(eps=EPS)(trained, train.x, train.y), stored)


def test_a_precomputed_source_s_examples_are_stored_and_the_run_starts_from_its_own_weights(tmp_path, capfd):
    """--precomputed-source: the FGSM examples are those of the file's weights (here a trained model), not of the
    starting (random) weights, which training still starts from."""
    source = _run(tmp_path, "source", steps=4, lr=0.05).model_path
    result = _run(tmp_path, "run", steps=3, precomputed_source=str(source))
    assert f"against {source} once" in capfd.readouterr().err
    train, _ = load_train_data(Dataset.MNIST, 96, 16, None)
    trained = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF, checkpoint=source).module
    stored = _stored(result.out)
    assert torch.equal(stored, FGSM(eps=EPS)(trained, train.x, train.y))
    assert not torch.equal(stored, FGSM(eps=EPS)(_start_model(), train.x, train.y))
    with safe_open(str(result.out / FILE), framework="pt") as fh:
        assert fh.metadata() == made_from(trained, train, EPS, "Linf")
    # the same run without the source starts from the same weights: only the examples differ
    plain = _run(tmp_path, "plain", steps=3)
    assert (plain.out / FILE).read_bytes() != (result.out / FILE).read_bytes()
    assert not _same(load_file(str(plain.model_path)), load_file(str(result.model_path)))


def test_precomputed_changes_nothing_but_the_examples(tmp_path):
    """At the starting weights the objective equals the on-the-fly one with the same FGSM; after an update the
    on-the-fly examples move, the stored ones (the L_sa positives too) do not."""
    cfg = make_finetune_config(dict(TINY, triplet="sa", out=str(tmp_path / "x")))
    train, _ = load_train_data(Dataset.MNIST, 96, 16, None)
    model = _start_model().train()
    table = FGSM(eps=EPS)(model, train.x, train.y)
    stored = build_objective(cfg, sensitivity=table)
    assert isinstance(stored.base.maximizer, StoredExamples) and stored.label == "fgsm-at+triplet-sa"
    online = build_objective(make_finetune_config(dict(TINY, triplet="sa", inner_examples="attack",
                                                       precomputed_eps=None, out="x")))
    online.base.maximizer = FGSM(eps=EPS)  # the same attack, run at every step
    index = torch.tensor([5, 17, 0, 42, 90, 63, 8, 31])
    x, y = train.x[index], train.y[index]
    a, b = stored(model, x, y, None, index), online(model, x, y, None, index)
    assert torch.equal(a.out.x_adv, table[index]) and torch.equal(b.out.x_adv, table[index])
    assert torch.equal(a.loss, b.loss) and a.stats == b.stats
    assert torch.equal(a.out.per_sample, F.cross_entropy(model(table[index]), y, reduction="none"))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    optimiser.zero_grad()
    a.loss.backward()
    optimiser.step()
    a, b = stored(model, x, y, None, index), online(model, x, y, None, index)
    assert torch.equal(a.out.x_adv, table[index]) and not torch.equal(b.out.x_adv, table[index])


def test_two_runs_with_different_later_weights_store_the_same_examples(tmp_path):
    slow, fast = _run(tmp_path, "slow", steps=4), _run(tmp_path, "fast", steps=4, lr=0.05)
    assert not _same(load_file(str(slow.model_path)), load_file(str(fast.model_path)))
    assert (slow.out / FILE).read_bytes() == (fast.out / FILE).read_bytes()
    attack = _run(tmp_path, "attack", steps=4, inner_examples="attack", precomputed_eps=None)
    assert not (attack.out / FILE).exists()
    assert not _same(load_file(str(slow.model_path)), load_file(str(attack.model_path)))


def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    common = dict(triplet="sa", init="perturb:0.1")  # --init: the starting weights are made again on --resume
    full = _run(tmp_path, "full", steps=10, **common)
    _run(tmp_path, "split", steps=6, **common)  # killed after step 6 (the last checkpoint)
    resumed = _run(tmp_path, "split", steps=10, resume=True, **common)
    assert _same(load_file(str(full.model_path)), load_file(str(resumed.model_path)))
    assert (full.out / FILE).read_bytes() == (resumed.out / FILE).read_bytes()
    # killed before the file was written: it is made again, identical
    _run(tmp_path, "lost", steps=6, **common)
    (tmp_path / "lost" / FILE).unlink()
    again = _run(tmp_path, "lost", steps=10, resume=True, **common)
    assert _same(load_file(str(full.model_path)), load_file(str(again.model_path)))
    # a file made from other inputs is refused on --resume
    identity = made_from(_start_model(init="perturb:0.1"), load_train_data(Dataset.MNIST, 96, 16, None)[0], 0.1,
                         "Linf")
    write_examples(tmp_path / "lost" / FILE, _stored(tmp_path / "lost"), identity)
    with pytest.raises(UserError, match=r"other inputs \(eps\)"):
        _run(tmp_path, "lost", steps=12, resume=True, **common)


def test_a_table_that_is_not_the_batch_s_is_an_error():
    x = torch.rand(4, 1, 28, 28)
    attack = StoredExamples((x + 0.01).clamp(0, 1), eps=0.05)
    attack.select(torch.arange(4))
    assert torch.equal(attack(torch.nn.Flatten(), x, torch.zeros(4, dtype=torch.long)), (x + 0.01).clamp(0, 1))
    attack.select(torch.tensor([1, 0, 2, 3]))
    with pytest.raises(RuntimeError, match="not this batch's"):
        attack(torch.nn.Flatten(), x, torch.zeros(4, dtype=torch.long))


FT = ["finetune", "--model", "mnist-smallcnn", "--dataset", "mnist", "--no-pretrained", "--train-subset", "32",
      "--holdout", "0", "--batch-size", "8", "--steps", "1", "--inner-examples", "precomputed-fgsm"]


@pytest.mark.parametrize("extra, expected", [
    (["--threat", "w2"], "not go with --threat w2"),
    (["--method", "udr"], "not go with --method udr"),
    (["--eps-ramp", "3"], "not go with --eps-ramp"),
    (["--inner-step-size", "0.1"], "not go with --inner-step-size"),
    (["--armor-cost-weight", "1"], "not go with --armor-cost-weight"),
    (["--precomputed-eps", "0"], "--precomputed-eps must be > 0"),
    (["--inner-examples", "pgd"], "invalid choice: 'pgd'"),
    (["--precomputed-source", "no/such.safetensors"], "--precomputed-source no/such.safetensors: no such file"),
])
def test_bad_combinations_are_one_line_and_exit_2(tmp_path, capsys, extra, expected):
    out = tmp_path / "run"
    assert main(FT + extra + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_precomputed_eps_needs_the_option_and_cifar_is_refused(tmp_path, capsys):
    plain = [a for a in FT if a not in ("--inner-examples", "precomputed-fgsm")]
    assert main(plain + ["--precomputed-eps", "0.1", "--out", str(tmp_path / "a")]) == 2
    assert "--precomputed-eps needs --inner-examples precomputed-fgsm" in capsys.readouterr().err
    assert main(plain + ["--precomputed-source", "x.safetensors", "--out", str(tmp_path / "a")]) == 2
    assert "--precomputed-source needs --inner-examples precomputed-fgsm" in capsys.readouterr().err
    cifar = FT[:2] + ["cifar10-resnet-small", "--dataset", "cifar10"] + FT[5:]
    assert main(cifar + ["--out", str(tmp_path / "b")]) == 2
    assert "needs --dataset mnist" in capsys.readouterr().err


def test_two_gloo_processes_match_one_process(tmp_path):
    common = ["--model", "mnist-smallcnn", "--dataset", "mnist", "--no-pretrained", "--steps", "3", "--batch-size",
              "16", "--train-subset", "64", "--holdout", "0", "--method", "pgd-at", "--inner-examples",
              "precomputed-fgsm", "--precomputed-eps", "0.1", "--schedule", "constant",
              "--seed", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "wdro_finetune.cli", "finetune", *common, "--out",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29641", "-m", "wdro_finetune.cli", "finetune", *common, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stderr.count("making the FGSM examples") == 1  # rank 0 makes them, rank 1 reads them
    assert (tmp_path / "one" / FILE).read_bytes() == (tmp_path / "two" / FILE).read_bytes()
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
