"""DET and CMC plots (matplotlib, PNG) for the matcher benchmark."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """FNIR against FPIR, both on log axes, one line per index kind."""
    figure, axes = plt.subplots(figsize=(6, 5))
    for label, (fpir, fnir) in curves.items():
        keep = (fpir > 0) & (fnir > 0)
        axes.plot(fpir[keep], fnir[keep], label=label, drawstyle="steps-post")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("FPIR (non-mated searches returning a candidate)")
    axes.set_ylabel("FNIR (mated searches missing the mate at rank 1)")
    axes.set_title("DET, open-set 1:N identification")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_cmc(curves: dict[str, np.ndarray], path: Path) -> None:
    """Identification rate against rank, one line per index kind."""
    figure, axes = plt.subplots(figsize=(6, 5))
    for label, rates in curves.items():
        axes.plot(np.arange(1, rates.size + 1), rates, marker="o", label=label)
    axes.set_xlabel("rank")
    axes.set_ylabel("identification rate of mated searches")
    axes.set_title("CMC")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
