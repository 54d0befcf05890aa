"""AP / top-1 report of run directories: ``report.md``, ``report.csv`` and PNG plots.

Runs are grouped by (task, dataset, teacher, student). Inside a group the rows are the
teacher, the student baseline, then each distilled method; every row shows its gain over
the baseline (a complete "student" run of the group) and, where
``kd_det/data/paper_results.csv`` holds the same (dataset, teacher, student, method,
metric), the paper's value and the difference. A "teacher" run joins every group of its
teacher network, a "student" run every group of its student network. Missing and
incomplete runs are listed, never dropped. ``tools/report.py`` is the command line.
"""
import csv
import os
import re
import time

from .plots import plot_curves, plot_methods
from .runs import CLS_METRICS, COMPLETE, DET_METRICS, MISSING, loss_curves, read_run

__all__ = ["PAPER_CSV", "load_paper_results", "group_runs", "group_rows", "build_report"]

PAPER_CSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "paper_results.csv")
REFERENCE = ("teacher", "student")
# Metrics compared with the papers, per task (the CSV's metric column).
PAPER_METRICS = {"detection": ("AP", "AP50", "AP75"), "classification": ("top1",)}
HEADLINE = {"detection": "AP", "classification": "top1"}


def load_paper_results(path=None):
    """The papers' numbers: {(dataset, teacher, student, method, metric): (value, source)}.

    Args:
        path: a CSV with columns task, dataset, teacher, student, method, metric, value,
            source (default: the packaged ``kd_det/data/paper_results.csv``).
    """
    path = path or PAPER_CSV
    out = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"dataset", "teacher", "student", "method", "metric", "value", "source"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path} lacks the column(s) {', '.join(sorted(need - set(reader.fieldnames or ())))}.")
        for row in reader:
            key = tuple(row[k] for k in ("dataset", "teacher", "student", "method", "metric"))
            out[key] = (float(row["value"]), row["source"])
    return out


def _network(run):
    """The network a reference run trained: the teacher's for "teacher" runs, else the student's."""
    return (run["teacher"] or run["student"]) if run["method"] == "teacher" else run["student"]


def _joins(run, key):
    task, dataset, teacher, student = key
    if (run["task"], run["dataset"]) != (task, dataset):
        return False
    return _network(run) == (teacher if run["method"] == "teacher" else student)


def _own_key(run):
    """Group key of a reference run that joins no group of a distilled run."""
    if run["method"] == "teacher":
        return run["task"], run["dataset"], _network(run), run["student"] if run["teacher"] else ""
    return run["task"], run["dataset"], run["teacher"], run["student"]


def group_runs(runs):
    """Group read runs by (task, dataset, teacher, student).

    Returns:
        (dict, list): {key: [runs in display order]} and the runs that fit no group
        (missing runs, whose labels are unknown).
    """
    groups, unplaced, refs = {}, [], []
    for r in runs:
        if r["status"] == MISSING or not r["task"] or not r["method"]:
            unplaced.append(r)
        elif r["method"] in REFERENCE:
            refs.append(r)
        else:
            groups.setdefault((r["task"], r["dataset"], r["teacher"], r["student"]), []).append(r)
    for r in refs:  # an unlabelled plain run of a network that only ever teaches is the teacher
        same = [k for k in groups if k[:2] == (r["task"], r["dataset"])]
        if r["labels_derived"] and r["method"] == "student" and any(k[2] == r["student"] for k in same) \
                and not any(k[3] == r["student"] for k in same):
            r.update(method="teacher", teacher=r["student"], student="")
    placed = set()
    for own in (False, True):  # first join the distilled runs' groups, then groups of their own
        for r in refs:
            if id(r) in placed:
                continue
            keys = [k for k in groups if _joins(r, k)] or ([_own_key(r)] if own else [])
            for k in keys:
                groups.setdefault(k, []).append(r)
                placed.add(id(r))
    order = {"teacher": 0, "student": 1}
    for k in groups:
        groups[k].sort(key=lambda r: order.get(r["method"], 2))  # stable: input order kept inside
    return groups, unplaced


def _metrics_of(task):
    return DET_METRICS if task == "detection" else CLS_METRICS


def group_rows(key, runs, paper):
    """Table rows of one group: each run's metrics, gain over the baseline, paper value and delta.

    Args:
        key: (task, dataset, teacher, student) of the group.
        runs: the group's runs from :func:`group_runs`.
        paper: :func:`load_paper_results` output.

    Returns:
        list of dicts, one per run, with "gain_<m>", "paper_<m>", "diff_<m>", "paper_source",
        "baseline_run" and "role" added to the run's fields.
    """
    task, dataset, teacher, student = key
    baseline = next((r for r in runs if r["method"] == "student" and r["status"] == COMPLETE), None)
    rows = []
    for r in runs:
        row = dict(r, group=" / ".join(x or "-" for x in key), role=r["method"] if r["method"] in REFERENCE
                   else "distilled", baseline_run=baseline["run"] if baseline else "", paper_source="")
        for m in _metrics_of(task):
            ours = r["metrics"].get(m)
            base = baseline["metrics"].get(m) if baseline else None
            if ours is not None and base is not None and r is not baseline:
                row[f"gain_{m}"] = ours - base
        for m in PAPER_METRICS[task]:
            hit = paper.get((r["paper_dataset"], teacher, student, r["method"], m))
            if hit is None:
                continue
            row[f"paper_{m}"], row["paper_source"] = hit
            if r["metrics"].get(m) is not None:
                row[f"diff_{m}"] = r["metrics"][m] - hit[0]
        rows.append(row)
    return rows


def _fmt(v, signed=False):
    if not isinstance(v, (int, float)) or v != v:  # None or NaN
        return "-"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _slug(*parts):
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", "_".join(p for p in parts if p)).strip("_") or "run"


def _progress(r):
    unit = "ep" if r["task"] == "classification" else "it"
    done = "-" if r["iteration"] is None else str(r["iteration"])
    return f"{done}/{r['max_iter']} {unit}" if r["max_iter"] else done


def _group_markdown(key, rows, paper_datasets, plot_rel):
    task, dataset, teacher, student = key
    metrics, head = _metrics_of(task), HEADLINE[task]
    pm = [m for m in PAPER_METRICS[task] if any(f"paper_{m}" in r for r in rows)]
    cols = ["Method", "Run", "Status", "Progress"] + list(metrics) + [f"Gain {head}"]
    cols += [f"Paper {m} (Δ)" for m in pm] + (["Source"] if pm else [])
    out = [f"## {task}: {dataset} · teacher {teacher or '-'} → student {student or '-'}", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["method"] + (" (baseline)" if r["run"] == r["baseline_run"] else ""), r["run"], r["status"],
                 _progress(r)] + [_fmt(r["metrics"].get(m)) for m in metrics] + [_fmt(r.get(f"gain_{head}"), True)]
        cells += [f"{_fmt(r[f'paper_{m}'])} ({_fmt(r.get(f'diff_{m}'), True)})" if f"paper_{m}" in r else "-"
                  for m in pm]
        cells += [r["paper_source"] or "-"] if pm else []
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if not rows[0]["baseline_run"]:
        out.append("No complete student baseline run in this group: no gain over the baseline is shown.  ")
    if rows[0]["paper_dataset"] not in paper_datasets:
        out.append(f"No paper delta: the papers report on {', '.join(sorted(paper_datasets))}, not on {dataset}.  ")
    elif not pm:
        out.append("The papers have no row for these runs (dataset, teacher, student, method).  ")
    derived = [r["run"] for r in rows if r["labels_derived"]]
    if derived:
        out.append(f"Labels derived from the config (set KD.LABEL.* / ROW.*): {', '.join(derived)}.  ")
    if plot_rel:
        out += ["", f"![{head} per method]({plot_rel})"]
    cats = sorted({c for r in rows for c in r["per_category"]})
    if cats:
        out += ["", "Per-category AP:", "", "| Category | " + " | ".join(f"{r['method']} ({r['run']})" for r in rows)
                + " |", "|" + "---|" * (len(rows) + 1)]
        out += [f"| {c} | " + " | ".join(_fmt(r["per_category"].get(c)) for r in rows) + " |" for c in cats]
    return out + [""]


CSV_HEAD = ["group", "task", "dataset", "paper_dataset", "teacher", "student", "method", "role", "run", "dir",
            "status", "note", "iteration", "max_iter", "baseline_run"]


def _write_csv(path, rows):
    metric_cols = [m for m in DET_METRICS + CLS_METRICS if any(m in r["metrics"] for r in rows)]
    extra = [f"{p}_{m}" for p in ("gain", "paper", "diff") for m in metric_cols if any(f"{p}_{m}" in r for r in rows)]
    cats = sorted({c for r in rows for c in r["per_category"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEAD + metric_cols + extra + ["paper_source"] + [f"AP-{c}" for c in cats])
        for r in rows:
            vals = [r.get(k, "") for k in CSV_HEAD] + [r["metrics"].get(m, "") for m in metric_cols]
            vals += [r.get(k, "") for k in extra] + [r.get("paper_source", "")]
            w.writerow(["" if v is None else v for v in vals] + [r["per_category"].get(c, "") for c in cats])


def _unique_names(run_dirs, names):
    """Display names: the given name, else the directory's base name (parent added on a clash)."""
    base = [names.get(d) or os.path.basename(os.path.normpath(d)) for d in run_dirs]
    return [b if base.count(b) == 1 or names.get(d) else "/".join(os.path.normpath(d).split(os.sep)[-2:])
            for b, d in zip(base, run_dirs)]


def _group_plot(key, rows, out_dir):
    """Draw the group's headline metric per method; returns the PNG path relative to ``out_dir``."""
    head = HEADLINE[key[0]]
    entries = [{"label": r["run"] if r["role"] != "distilled" else f"{r['method']}\n{r['run']}", "role": r["role"],
                "value": r["metrics"].get(head), "paper": r.get(f"paper_{head}")} for r in rows]
    rel = os.path.join("plots", _slug(head, *key) + ".png")
    plot_methods(entries, head, os.path.join(out_dir, rel), f"{key[1]}: {key[2] or '-'} → {key[3] or '-'} ({head})")
    return rel


def _curves_section(runs, out_dir):
    """Draw each run's training curves; returns (markdown lines, PNG paths)."""
    lines, files = [], []
    for r in runs:
        curves = loss_curves(r)
        if not curves:
            continue
        rel = os.path.join("plots", _slug("curves", r["run"]) + ".png")
        files.append(plot_curves(curves, os.path.join(out_dir, rel), f"{r['run']}: training losses",
                                 "epoch" if r["task"] == "classification" else "iteration"))
        lines += [f"### {r['run']}", "", f"![training losses of {r['run']}]({rel})", ""]
    return (["## Training curves", ""] + lines if lines else []), files


def build_report(run_dirs, out_dir, names=None, paper_csv=None, title="AP / top-1 report", plots=True):
    """Read every run, write ``report.md``, ``report.csv`` and ``plots/*.png`` under ``out_dir``.

    Args:
        run_dirs: run directories (detection or classification OUTPUT_DIRs), in display order.
        out_dir: folder to write into (created).
        names: optional {run_dir: display name}.
        paper_csv: papers' numbers (default: the packaged ``kd_det/data/paper_results.csv``).
        title: first heading of ``report.md``.
        plots: also draw the PNG plots.

    Returns:
        dict with "markdown" (the report text), "summary" (its tables without plots, for a
        console), "rows" (every table row, missing runs included), "runs", "files" (paths
        written: report.md, report.csv, then the plots) and "problems" (one line per missing
        or incomplete run).
    """
    names = names or {}
    runs = [read_run(d, n) for d, n in zip(run_dirs, _unique_names(run_dirs, names))]
    paper = load_paper_results(paper_csv)
    groups, unplaced = group_runs(runs)
    os.makedirs(os.path.join(out_dir, "plots") if plots else out_dir, exist_ok=True)
    files, rows, body = [], [], []
    for key, members in groups.items():
        g_rows = group_rows(key, members, paper)
        rows += g_rows
        rel = _group_plot(key, g_rows, out_dir) if plots else None
        files += [os.path.join(out_dir, rel)] if rel else []
        body += _group_markdown(key, g_rows, {k[0] for k in paper}, rel)
    rows += [dict(r, group="", role="", baseline_run="", paper_source="") for r in unplaced]
    bad = [r for r in runs if r["status"] != COMPLETE]
    counts = ", ".join(f"{sum(r['status'] == s for r in runs)} {s}" for s in ("complete", "incomplete", "missing"))
    md = [f"# {title}", "", f"{len(runs)} run(s): {counts}. Generated {time.strftime('%Y-%m-%d %H:%M')}; paper "
          f"numbers from {paper_csv or 'kd_det/data/paper_results.csv'} (source per row). Gain: difference to the "
          "group's student baseline; Δ: this run minus the paper.", ""] + body
    if bad:
        md += ["## Missing or incomplete runs", "", "| Run | Directory | Status | Why |", "|---|---|---|---|"]
        md += [f"| {r['run']} | {r['dir']} | {r['status']} | {r['note'] or '-'} |" for r in bad] + [""]
    summary = re.sub(r"\n{3,}", "\n\n", "\n".join(line for line in md if not line.startswith("!["))).rstrip() + "\n"
    curves_md, curve_files = _curves_section(runs, out_dir) if plots else ([], [])
    text = "\n".join(md + curves_md).rstrip() + "\n"
    md_path, csv_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.csv")
    with open(md_path, "w") as f:
        f.write(text)
    _write_csv(csv_path, rows)
    return {"markdown": text, "summary": summary, "rows": rows, "runs": runs,
            "files": [md_path, csv_path] + files + curve_files,
            "problems": [f"{r['run']}: {r['status']} ({r['note'] or 'no reason recorded'})" for r in bad]}
