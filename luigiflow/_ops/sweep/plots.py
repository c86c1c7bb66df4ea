"""Sweep plots: the metric against each swept parameter, and parallel coordinates."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def plot(
    frame: pd.DataFrame,
    swept: list[str],
    metric: str,
    folder: pathlib.Path,
    log_scaled: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """PNG files: the metric against each swept parameter (log axes for parameters drawn
    log-uniformly; the best point, the frame's first row, marked), and parallel
    coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = []
    for key in swept:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        if frame[key].dtype.kind in "if":
            ax.scatter(frame[key], frame[metric])
            ax.scatter(
                frame[key].iloc[:1],
                frame[metric].iloc[:1],
                marker="*",
                s=220,
                color="crimson",
                label="best",
                zorder=3,
            )
            ax.legend(loc="best")
            if key in log_scaled:
                ax.set_xscale("log")
        else:
            categories = sorted(frame[key].astype(str).unique())
            positions = frame[key].astype(str).map({c: i for i, c in enumerate(categories)})
            jitter = (np.arange(len(frame)) % 5 - 2) * 0.04
            ax.scatter(positions + jitter, frame[metric])
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by {key}")
        ax.grid(alpha=0.3)
        name = f"{metric}_by_{key}.png"
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        names.append(name)

    axes = [*swept, metric]
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(axes)), 4.5), dpi=100)
    scaled = {}
    for key in axes:
        column = frame[key]
        if column.dtype.kind not in "if":
            categories = sorted(column.astype(str).unique())
            column = column.astype(str).map({c: i for i, c in enumerate(categories)})
            ticks = categories
        else:
            ticks = None
        low, high = float(column.min()), float(column.max())
        scaled[key] = (column - low) / (high - low) if high > low else column * 0 + 0.5
        if ticks:
            for i, label in enumerate(ticks):
                y = i / (len(ticks) - 1) if len(ticks) > 1 else 0.5
                ax.annotate(label, (axes.index(key), y), fontsize=7, ha="left")
        else:
            ax.annotate(f"{high:.4g}", (axes.index(key), 1.0), fontsize=7)
            ax.annotate(f"{low:.4g}", (axes.index(key), 0.0), fontsize=7)
    colors = plt.get_cmap("viridis")(scaled[metric].to_numpy(dtype=float))
    for i in range(len(frame)):
        ax.plot(range(len(axes)), [scaled[k].iloc[i] for k in axes], color=colors[i], alpha=0.8)
    ax.set_xticks(range(len(axes)), axes)
    ax.set_yticks([])
    ax.set_title(f"parallel coordinates (colour: {metric})")
    fig.tight_layout()
    fig.savefig(folder / "parallel_coordinates.png")
    plt.close(fig)
    names.append("parallel_coordinates.png")
    return names
