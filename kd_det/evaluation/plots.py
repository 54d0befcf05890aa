"""PNG plots of a report, drawn with Matplotlib's Agg canvas (no display, no pyplot state)."""
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_methods", "plot_curves"]

TOTALS = ("total_loss", "loss_total")
ERR_COLOR = "tab:orange"  # error bars (± std over seeds)
# The task's own losses (Faster R-CNN, classification CE); any other loss_* is a distillation term (green).
TASK_LOSSES = ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "loss_ce")


def _save(fig, path):
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def plot_methods(entries, metric, path, title):
    """Bar chart of one metric per distilled method, teacher and student baseline as lines.

    Args:
        entries: list of dicts with "label" (x tick), "role" ("teacher", "student" or
            "distilled"), "value" (float or None; the mean over seeds), "paper" (float or None)
            and optionally "err" (std over seeds, drawn as an error bar on a bar and as a band
            around a teacher / baseline line; None for one seed) and "n" (seeds).
        metric: metric name for the y axis ("AP", "top1").
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``.
    """
    bars = [e for e in entries if e["role"] == "distilled"]
    fig = Figure(figsize=(max(7.0, 3.0 + 0.9 * len(bars)), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(bars)))
    heights = [e["value"] if e["value"] is not None else 0.0 for e in bars]
    ax.bar(xs, heights, color="tab:blue", label="this run (mean over seeds)" if bars else None)
    errs = [(x, e) for x, e in zip(xs, bars) if e["value"] is not None and e.get("err") is not None]
    if errs:
        ax.errorbar([x for x, _ in errs], [e["value"] for _, e in errs], yerr=[e["err"] for _, e in errs],
                    fmt="none", ecolor=ERR_COLOR, elinewidth=2, capsize=6, zorder=4, label="± std over seeds")
    for x, e in zip(xs, bars):
        if e["value"] is None:
            ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8)
    paper = [(x, e["paper"]) for x, e in zip(xs, bars) if e.get("paper") is not None]
    if paper:
        ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker="_", s=400, color="black",
                   zorder=3, label="paper")
    styles = {"teacher": ("tab:red", "-"), "student": ("tab:gray", "--")}
    for e in entries:
        if e["role"] in styles and e["value"] is not None:
            color, ls = styles[e["role"]]
            err = e.get("err")
            spread = f" ± {err:.2f} (n = {e.get('n')})" if err is not None else ""
            ax.axhline(e["value"], color=color, linestyle=ls,
                       label=f"{e['role']} ({e['label']}): {e['value']:.2f}{spread}")
            if err is not None:
                ax.axhspan(e["value"] - err, e["value"] + err, color=color, alpha=0.15, lw=0)
    ax.set_xticks(xs)
    ax.set_xticklabels([e["label"] for e in bars], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    values = [e["value"] for e in entries if e["value"] is not None] + [p[1] for p in paper]
    values += [e["value"] + s * e["err"] for e in entries if e["value"] is not None and e.get("err") is not None
               for s in (-1, 1)]
    if values:  # zoom on the values compared; bars are clipped at the bottom
        lo, hi = min(values), max(values)
        pad = max(1.0, 0.15 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
    if not bars:
        ax.set_xlim(-1, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a bar
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(curves, path, title, xlabel="iteration"):
    """Training curves, one panel per loss term: total (red) first, task losses (blue), distillation (green).

    Args:
        curves: {name: ([x...], [y...])} as returned by :func:`kd_det.evaluation.runs.loss_curves`.
        path: PNG file to write.
        title: figure title.
        xlabel: x axis label ("iteration" or "epoch").

    Returns:
        ``path``.
    """
    names = sorted(curves, key=lambda n: (n not in TOTALS, n not in TASK_LOSSES, n))
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4.0 * cols, 2.6 * rows + 0.4))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs, ys = curves[name]
        total, task_loss = name in TOTALS, name in TASK_LOSSES
        color = "tab:red" if total else ("tab:blue" if task_loss else "tab:green")
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, color=color)
        ax.set_title(name if total or task_loss else f"{name} (distillation)", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
