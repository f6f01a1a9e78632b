"""The report's figures (PNG), drawn from a `Summary` only, so each shows exactly the numbers results.md lists.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mtrl.report.aggregate import Series, Summary

RELABEL_TITLES = {"error_all": "|relabelled − true reward|, all rows",
                  "error_kept": "|relabelled − true reward|, kept rows",
                  "keep_fraction": "fraction of rows kept"}


def draw_figures(summary: Summary, out: Path) -> dict[str, str]:
    """Draw every figure the data allows into `out`; returns figure key -> file name of those drawn."""
    drawn = {}
    heading = figure_heading(summary)
    if summary.methods:
        drawn["fig4"] = draw_curves(summary.methods, out / "fig4_multitask_returns.png",
                                f"{heading}\nMBML and baselines: average test-task return (Fig. 4)", "training epoch")
    if len(summary.ablations) > 1:
        drawn["fig6"] = draw_curves(summary.ablations, out / "fig6_ablations.png",
                                f"{heading}\nMBML ablations: average test-task return (Fig. 6)", "training epoch")
    if summary.relabel is not None:
        drawn["fig7"] = _relabel(summary.relabel.matrices, out / "fig7_relabel_error.png",
                                 f"{heading}\nRelabelling on other tasks' transitions (Fig. 7), "
                                 f"mean over n={len(summary.relabel.runs)} seed(s)")
    if summary.embeddings:
        drawn["embeddings"] = _embeddings(summary.embeddings, out / "embeddings.png",
                                          f"{heading}\nTask embeddings of the training tasks' context sets, run "
                                          f"{summary.embeddings_run} (PCA per method)")
    for (kind, task), series in summary.cql_curves.items():
        drawn[f"cql_{kind}_{task}"] = draw_curves(series, out / f"cql_{kind}_task_{task:02d}.png",
                                                  f"{heading}\n{kind} data, task_{task:02d}: evaluation return "
                                                  "(seed 004 Fig. 4)", "training epoch")
    for kind, pairs in summary.cql_relabel.items():
        drawn[f"cql_relabel_{kind}"] = draw_curves(pairs, out / f"cql_relabel_{kind}.png",
                                                   f"{heading}\nHCSAC, {kind} data: fraction of task j's transitions "
                                                   "admitted to task i (j → i)", "training epoch")
    if summary.sac_init:
        drawn["fig8"] = draw_curves(summary.sac_init, out / "fig8_sac_init.png",
                                f"{heading}\nAdaptation on test tasks: SAC-init, SAC, IWPA (Fig. 8)",
                                "interactions", each="mean over the test tasks of a seed")
    return drawn


def figure_heading(summary: Summary) -> str:
    """The family and profile every figure names, flagged when the numbers are a smoke test's."""
    flag = " — SMOKE PROFILE: NOT RESULTS" if summary.smoke else ""
    return f"{summary.family}, profile {summary.profile}{flag}"


def band_text(series: dict[str, Series], each: str = "") -> str:
    """What a curve figure's line and band are: mean and ± one std (ddof 0) over seeds, with their number."""
    counts = sorted({len(s.per_run) for s in series.values()})
    of = f" ({each})" if each else ""
    if counts == [1]:
        return f"line: one seed{of}, no band"
    return f"line: mean, band: ± std over n={'/'.join(map(str, counts))} seeds{of}"


def draw_curves(series: dict[str, Series], path: Path, title: str, xlabel: str, each: str = "") -> str:
    """Mean over runs as a line, ± one std shaded; the legend gives each line's number of runs."""
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for name, s in series.items():
        (line,) = ax.plot(s.x, s.mean, marker="o" if len(s.x) <= 20 else None, label=f"{name} (n={len(s.per_run)})")
        ax.fill_between(s.x, s.mean - s.std, s.mean + s.std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(title=f"{title}\n{band_text(series, each)}", xlabel=xlabel, ylabel="average return")
    ax.title.set_fontsize("medium")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path.name


def _relabel(matrices: dict[str, np.ndarray], path: Path, title: str) -> str:
    """One heatmap per statistic over ordered task pairs; the diagonal (a task's own data) is left blank.

    Both error maps share one colour scale from 0, so kept rows can be compared with all rows at a glance. Cells
    carry their value only for small task sets (up to 6): beyond that the labels overlap, and results.md has them.
    """
    off = ~np.eye(len(next(iter(matrices.values()))), dtype=bool)
    error_max = max((float(np.nanmax(m[off])) for k, m in matrices.items() if k.startswith("error")), default=1.0)
    fig = Figure(figsize=(4.2 * len(matrices), 3.8), layout="constrained")
    for ax, (key, matrix) in zip(fig.subplots(1, len(matrices), squeeze=False)[0], matrices.items(), strict=True):
        shown = np.where(off, matrix, np.nan)
        top = error_max if key.startswith("error") else 1.0
        image = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=top)
        fig.colorbar(image, ax=ax, shrink=0.8)
        if len(matrix) <= 6:
            for (i, j), value in np.ndenumerate(shown):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize="x-small",
                            color="white" if value < top / 2 else "black")
        ax.set(title=RELABEL_TITLES[key], xlabel="data of task j", ylabel="model of task i",
               xticks=range(len(matrix)), yticks=range(len(matrix)))
        ax.title.set_fontsize("small")
    fig.suptitle(title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path.name


def _embeddings(embeddings: dict[str, np.ndarray], path: Path, title: str) -> str:
    """One panel per method: its embeddings z of each training task's own context sets [K, sets, z], projected
    on their first two principal components (scikit-learn's PCA, deterministic, as FOCAL's Fig. 7 shows a
    projection rather than t-SNE) and coloured by task. Tight, separate clusters: the encoder tells tasks apart."""
    from sklearn.decomposition import PCA

    fig = Figure(figsize=(3.6 * len(embeddings), 3.8), layout="constrained")
    colours = [f"C{k % 10}" for k in range(max(len(z) for z in embeddings.values()))]
    for ax, (method, z) in zip(fig.subplots(1, len(embeddings), squeeze=False)[0], embeddings.items(),
                               strict=True):
        flat = z.reshape(-1, z.shape[-1])
        points, ratio = np.zeros((*z.shape[:2], 2)), [np.nan, np.nan]
        if np.ptp(flat, axis=0).max() > 0:  # else every set embeds alike (a task-blind encoder): one point
            pca = PCA(n_components=min(2, *flat.shape))
            projected = pca.fit_transform(flat).reshape(*z.shape[:2], -1)
            points[..., :projected.shape[-1]], ratio[:projected.shape[-1]] = projected, pca.explained_variance_ratio_
        for task, task_points in enumerate(points):
            ax.scatter(*task_points.T, s=8, color=colours[task], marker="o" if task < 10 else "x",
                       label=f"task {task}")
        ax.set(title=method, **{f"{axis}label": f"PC {i + 1}" + (f" ({share:.0%})" if np.isfinite(share) else "")
                                for i, (axis, share) in enumerate(zip("xy", ratio, strict=True))})
        ax.title.set_fontsize("small")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path.name
