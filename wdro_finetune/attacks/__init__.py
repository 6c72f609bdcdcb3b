"""Attacks in [0, 1] pixel space: per-sample losses, pointwise FGSM/PGD, Wasserstein W-PGD / W-FGSM /
W-PGD-budget (Bai, He, Jiang & Obloj), minimal-norm attacks, AutoAttack, and the attack-free sensitivity
bounds. :data:`ATTACKS`: the attack objects by name (the contract of :mod:`.base`)."""

from .bounds import AccuracyRatioBounds, CleanSensitivity, accuracy_ratio_bounds, clean_sensitivity
from .losses import cross_entropy, dlr, get_attack_loss, kl_divergence, redlr
from .pointwise import fgsm, pgd, pgd_maximize, project_to_ball
from .registry import ATTACKS, make_attack
from .wasserstein_eval import WAttackResult, dataset_distance, project_w_ball, w_pgd
from .wasserstein_budget import rescale_budgets, w_pgd_budget

__all__ = [
    "ATTACKS", "AccuracyRatioBounds", "CleanSensitivity", "WAttackResult", "accuracy_ratio_bounds", "clean_sensitivity",
    "cross_entropy", "dataset_distance", "dlr", "fgsm", "get_attack_loss", "kl_divergence", "make_attack", "pgd",
    "pgd_maximize", "project_to_ball", "project_w_ball", "redlr", "rescale_budgets", "w_pgd", "w_pgd_budget",
]
