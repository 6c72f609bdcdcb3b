"""Attacks in [0, 1] pixel space: per-sample losses, pointwise FGSM/PGD, Wasserstein W-PGD / W-FGSM /
W-PGD-budget (Bai, He, Jiang & Obloj), and the attack-free sensitivity bounds."""

from .bounds import AccuracyRatioBounds, CleanSensitivity, accuracy_ratio_bounds, clean_sensitivity
from .losses import cross_entropy, dlr, get_attack_loss, kl_divergence, redlr
from .pointwise import fgsm, pgd, pgd_maximize, project_to_ball
from .w_pgd import WAttackResult, dataset_distance, project_w_ball, w_pgd
from .w_pgd_budget import rescale_budgets, w_pgd_budget

__all__ = [
    "AccuracyRatioBounds", "CleanSensitivity", "WAttackResult", "accuracy_ratio_bounds", "clean_sensitivity",
    "cross_entropy", "dataset_distance", "dlr", "fgsm", "get_attack_loss", "kl_divergence", "pgd",
    "pgd_maximize", "project_to_ball", "project_w_ball", "redlr", "rescale_budgets", "w_pgd", "w_pgd_budget",
]
