"""PNG pictures: spectra CDFs per layer, reward per episode, quality against ratio.

Needs the optional extra `pip install "prunenet[plot]"` (matplotlib). Figures are drawn on matplotlib's
Agg canvas directly, never through pyplot, so nothing changes the process's global backend.
"""
from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .spectra import ks_per_layer

INSTALL = 'pip install "prunenet[plot]"'


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError(f"plots need matplotlib: {INSTALL}") from None
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"folder of plot {str(path)!r} does not exist")
    figure.savefig(path, dpi=110)
    return path


def plot_spectra(original: torch.Tensor, compressed: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """One panel per layer: the empirical CDF of the original's singular values and of each compressed model's.

    `original` is (L, m) and each compressed entry (L, p), ascending (see `spectra.scored_spectra`); each
    panel's title gives the KS distance of every compressed model to the original in that layer.
    """
    if not compressed:
        raise ValueError("plot_spectra needs at least one compressed model's spectra")
    layers = original.shape[0]
    ks = {label: ks_per_layer(original, values) for label, values in compressed.items()}
    cols = min(6, layers)
    rows = math.ceil(layers / cols)
    figure = _figure(2.6 * cols, 2.2 * rows + 0.6)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for layer, ax in enumerate(axes):
        if layer >= layers:
            ax.set_visible(False)
            continue
        _ecdf(ax, original[layer], "original", color="black")
        for label, values in compressed.items():
            _ecdf(ax, values[layer], label)
        ax.set_title(f"layer {layer}: KS " + ", ".join(f"{ks[label][layer]:.3f}" for label in compressed), fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    figure.suptitle("CDF of singular values of each layer's scored FFN matrix", fontsize=10)
    return _save(figure, path)


def _ecdf(ax, values: torch.Tensor, label: str, **style) -> None:
    x = values.double().cpu().numpy()
    y = [(i + 1) / len(x) for i in range(len(x))]
    ax.step(x, y, where="post", label=label, linewidth=0.9, **style)


def plot_rewards(series: Mapping[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Total reward per REINFORCE episode for each labelled fit; the best episode is marked."""
    if not series:
        raise ValueError("plot_rewards needs at least one fit's rewards")
    figure = _figure(6, 4)
    ax = figure.subplots()
    for label, rewards in series.items():
        episodes = range(1, len(rewards) + 1)
        line = ax.plot(episodes, rewards, marker=".", label=label)[0]
        best = max(range(len(rewards)), key=rewards.__getitem__)
        ax.plot(best + 1, rewards[best], marker="*", markersize=12, color=line.get_color())
    ax.set_xlabel("episode")
    ax.set_ylabel("total reward (sum over layers of gamma^l / KS)")
    ax.set_title("PruneNet policy training (star: the episode kept)")
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_quality(rows: Sequence[Mapping], path: str | os.PathLike, original: Mapping | None = None) -> Path:
    """Perplexity, KL and top-1 agreement against ratio, one series per selector.

    `rows` hold ratio, selector, perplexity, kl and agreement (one per compressed model, seeds included):
    each seed is a dot, the line joins the medians. `original` (with its perplexity) adds a reference line.
    """
    rows = [row for row in rows if row.get("ratio") is not None and row.get("perplexity") is not None]
    if not rows:
        raise ValueError("plot_quality needs compressed models whose ratio is known (made by prunenet)")
    figure = _figure(13, 4)
    panels = dict(zip(("perplexity", "kl", "agreement"), figure.subplots(1, 3)))
    selectors = sorted({str(row.get("selector")) for row in rows})
    for metric, ax in panels.items():
        for number, selector in enumerate(selectors):
            mine = [row for row in rows if str(row.get("selector")) == selector and row.get(metric) is not None]
            if not mine:
                continue
            color = f"C{number}"
            ax.scatter([r["ratio"] for r in mine], [r[metric] for r in mine], s=12, alpha=0.5, color=color)
            ratios = sorted({r["ratio"] for r in mine})
            medians = [statistics.median(r[metric] for r in mine if r["ratio"] == x) for x in ratios]
            ax.plot(ratios, medians, marker="o", color=color, label=selector)
        ax.set_xlabel("ratio (fraction of FFN rows removed)")
        ax.set_title(metric)
    if original is not None and original.get("perplexity") is not None:
        panels["perplexity"].axhline(original["perplexity"], color="black", linestyle="--", label="original")
    panels["perplexity"].set_yscale("log")
    panels["kl"].set_ylabel("mean KL(original || compressed), nats")
    panels["agreement"].set_ylabel("top-1 agreement with the original")
    panels["perplexity"].legend(fontsize=8)
    return _save(figure, path)


def quality_rows(report: Mapping) -> tuple[list[dict], dict | None]:
    """(compressed rows, original) from a quality-table JSON (`rows`) or an eval report (`models`)."""
    if "rows" in report:
        return list(report["rows"]), report.get("original")
    if "models" in report:
        models = report["models"]
        original = next((m for m in models if m.get("role") == "original"), None)
        return [m for m in models if m.get("role") == "compressed"], original
    raise ValueError("not a quality-table or eval report: it has neither 'rows' nor 'models'")


def rewards_of(report: Mapping) -> list[float]:
    """The reward per episode from a fit or compress report (`report["fit"]["reward_per_episode"]`)."""
    rewards = (report.get("fit") or {}).get("reward_per_episode")
    if not rewards:
        raise ValueError("the report holds no fit (report['fit']['reward_per_episode'])")
    return list(rewards)
