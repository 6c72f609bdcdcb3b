"""The embedding plot: PCA by hand, features of the last Linear, and the CLI end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from wdro_finetune.models.builtin import SmallCNN
from wdro_finetune.workflows.embeddings import embedding_panel, pca_2d, penultimate


def test_pca_of_points_on_a_line_puts_all_variance_on_the_first_axis():
    t = torch.tensor([[-2.0], [-1.0], [0.0], [1.0], [2.0]])
    points = torch.cat([3 * t, 4 * t, torch.zeros_like(t)], dim=1)  # direction (0.6, 0.8, 0)
    (fit, other), explained = pca_2d(points, torch.tensor([[3.0, 4.0, 0.0]]))
    np.testing.assert_allclose(np.abs(fit[:, 0]), 5 * np.abs(t[:, 0].numpy()), atol=1e-9)
    np.testing.assert_allclose(fit[:, 1], 0, atol=1e-9)
    assert abs(other[0, 0]) == np.float64(5.0) and explained[0] == 1.0


def test_panel_holds_clean_fgsm_and_invariance_points_of_the_last_linear_input():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x, y = torch.rand(12, 1, 28, 28), torch.arange(12) % 10
    x_inv, target = torch.rand(12, 1, 28, 28), (torch.arange(12) + 1) % 10
    panel = embedding_panel("m", model, x, y, x_inv, target, eps=0.3)
    assert panel.coords.shape == (36, 2) and list(np.bincount(panel.kind)) == [12, 12, 12]
    assert (panel.colour_labels[24:] == target.numpy()).all()
    h = penultimate(model, x)
    assert h.shape == (12, model.classifier[-1].in_features)
    np.testing.assert_allclose(panel.coords[:12].mean(0), 0, atol=1e-5)  # PCA is centred on the clean features


def test_plot_embeddings_command_writes_a_png_with_one_panel_per_checkpoint(tmp_path, data_dir, smallcnn_checkpoint):
    out = tmp_path / "emb.png"
    done = subprocess.run(
        [sys.executable, "-m", "wdro_finetune.cli", "plot", "embeddings", "--dataset", "mnist", "--model",
         "mnist-smallcnn", "--checkpoint", "none", "--checkpoint", str(smallcnn_checkpoint), "--n", "20",
         "--inv-grid", "fast", "--inv-cache", str(tmp_path / "cache"), "--data-dir", str(data_dir), "--out", str(out)],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cache" / "mnist-test-n20-eps0.3-fast.npz").is_file()
