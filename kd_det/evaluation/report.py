"""AP / top-1 report of run directories: ``report.md``, ``report.csv`` and PNG plots.

Runs are grouped by (task, dataset, teacher, student). Inside a group, runs whose configs are
equal except ``SEED`` and ``OUTPUT_DIR`` are seeds of one *arm*; the table has one line per arm:
the teacher, the student baseline, then each distilled method, with mean +- std over its
complete seeds and n. The gain over the baseline (the group's "student" arm) is a paired
difference (distilled - baseline of the same seed) with its 95% t confidence interval and a
verdict (:mod:`kd_det.evaluation.stats`); where ``kd_det/data/paper_results.csv`` holds the
same (dataset, teacher, student, method, metric), the paper's value and the difference are
shown. A "teacher" run joins every group of its teacher network, a "student" run every group
of its student network. Missing and incomplete runs are listed, never dropped.
``tools/report.py`` is the command line.
"""
import csv
import json
import math
import os
import re
import time

from .batch_split import batch_split_flags
from .plots import plot_curves, plot_methods
from .runs import CLS_METRICS, COMPLETE, DET_METRICS, MISSING, SEGM_METRICS, loss_curves, read_run
from .stats import BETTER, CONFIDENCE, NOISE, ONE, UNPAIRED, WORSE, paired_gain, pair_by_seed, summarize

__all__ = ["PAPER_CSV", "load_paper_results", "group_runs", "group_rows", "group_arms", "build_report"]

PAPER_CSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "paper_results.csv")
REFERENCE = ("teacher", "student")
# Metrics compared with the papers, per task (the CSV's metric column).
PAPER_METRICS = {"detection": ("AP", "AP50", "AP75"), "classification": ("top1",)}
HEADLINE = {"detection": "AP", "classification": "top1"}


def load_paper_results(path=None):
    """The papers' numbers: {(dataset, teacher, student, method, metric): (value, source, harness)}.

    Args:
        path: a CSV with columns task, dataset, teacher, student, method, metric, value,
            source and optionally harness (default: the packaged ``kd_det/data/paper_results.csv``).
            ``harness`` is empty when the number comes from the setting the row's config reproduces (the
            papers' Detectron2 / CIFAR recipes), else it names the other one (e.g. "mmdetection ... 2x"): the
            report then marks the delta as one across harnesses.
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
            out[key] = (float(row["value"]), row["source"], (row.get("harness") or "").strip())
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


def _metrics_of(task, runs=()):
    """The metric columns of ``runs``: the task's usual ones they hold (in order; mask AP after box AP), then any
    others they hold.

    Detection metric names come from each run's evaluation.json (COCO and VOC evaluators name different sets).
    """
    usual = DET_METRICS + SEGM_METRICS if task == "detection" else CLS_METRICS
    held = list(dict.fromkeys(m for r in runs for m in r["metrics"]))
    return [m for m in usual if m in held] + [m for m in held if m not in usual] or list(usual)


def _all_metrics(runs):
    """Detection's metric columns of ``runs``, then classification's."""
    return [m for t in ("detection", "classification") for m in _metrics_of(t, [r for r in runs if r["task"] == t])]


def _arm_key(run):
    """Runs with equal configs but for SEED and OUTPUT_DIR are seeds of one arm (a run without config: alone)."""
    cfg = run["config"]
    if not cfg:
        return run["method"], "dir:" + run["dir"]
    rest = {k: v for k, v in cfg.items() if k not in ("SEED", "OUTPUT_DIR")}
    return run["method"], json.dumps(rest, sort_keys=True, default=str)


def _by_seed(runs, metric):
    """{seed: value} of the complete runs with a fixed seed (SEED >= 0; a negative SEED is random)."""
    out = {}
    for r in runs:
        v = r["metrics"].get(metric)
        if r["status"] == COMPLETE and r["seed"] is not None and r["seed"] >= 0 and _finite(v):
            out.setdefault(r["seed"], v)
    return out


def _finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def _arms_of(runs):
    """{arm key: its runs}, arms in order of first appearance, runs ordered by seed."""
    arms = {}
    for r in runs:
        arms.setdefault(_arm_key(r), []).append(r)
    return {k: sorted(a, key=lambda r: (r["seed"] is None, r["seed"] or 0)) for k, a in arms.items()}


def _seed_ranges(seeds):
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out, seeds = [], sorted(seeds)
    for s in seeds:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def _arm_label(runs):
    """The arm's runs named once: "R-18 + DKD, seeds 0-2" when the names differ only in their seed (", seed 0",
    "/seed0"), else every name."""
    if len(runs) > 1 and all(r["seed"] is not None for r in runs):
        templates = {re.sub(rf"seed\s*{r['seed']}(?!\d)", "\x00", r["run"], count=1) for r in runs}
        if len(templates) == 1 and "\x00" in next(iter(templates)):
            label = next(iter(templates)).replace("/\x00", ", \x00")  # "dkd/seed0" -> "dkd, seeds 0-2"
            return label.replace("\x00", f"seeds {_seed_ranges({r['seed'] for r in runs})}")
    return ", ".join(r["run"] for r in runs)


def _baseline_arm(runs):
    """Runs of the group's baseline arm: the first "student" arm with a complete run ([] if none)."""
    return next((a for a in _arms_of(runs).values()
                 if a[0]["method"] == "student" and any(r["status"] == COMPLETE for r in a)), [])


def group_rows(key, runs, paper):
    """Table rows of one group, one per run: metrics, gain over the baseline, paper value and delta.

    A run's gain is its difference to the baseline run of the same seed (or to the baseline's
    only complete run when the baseline has one).

    Args:
        key: (task, dataset, teacher, student) of the group.
        runs: the group's runs from :func:`group_runs`.
        paper: :func:`load_paper_results` output.

    Returns:
        list of dicts, one per run, with "gain_<m>", "paper_<m>", "diff_<m>", "paper_source",
        "baseline_run", "arm" (the arm's label) and "role" added to the run's fields.
    """
    task, dataset, teacher, student = key
    base_arm = _baseline_arm(runs)
    base_done = [r for r in base_arm if r["status"] == COMPLETE]
    base_label = _arm_label(base_arm) if base_arm else ""
    labels = {k: _arm_label(a) for k, a in _arms_of(runs).items()}
    rows = []
    for r in runs:
        row = dict(r, group=" / ".join(x or "-" for x in key), role=r["method"] if r["method"] in REFERENCE
                   else "distilled", baseline_run=base_label, paper_source="", arm=labels[_arm_key(r)])
        partner = None
        if not any(r is b for b in base_arm):
            fixed = r["seed"] is not None and r["seed"] >= 0
            partner = next((b for b in base_done if fixed and b["seed"] == r["seed"]),
                           base_done[0] if len(base_done) == 1 else None)
        for m in _metrics_of(task, runs):
            ours = r["metrics"].get(m)
            base = partner["metrics"].get(m) if partner else None
            if ours is not None and base is not None:
                row[f"gain_{m}"] = ours - base
        for m in PAPER_METRICS[task]:
            hit = paper.get((r["paper_dataset"], teacher, student, r["method"], m))
            if hit is None:
                continue
            row[f"paper_{m}"], row["paper_source"], row["paper_harness"] = hit
            if r["metrics"].get(m) is not None:
                row[f"diff_{m}"] = r["metrics"][m] - hit[0]
        rows.append(row)
    return rows


def group_arms(key, rows):
    """One line per arm of a group: seeds pooled, mean +- std, paired gain with its CI and verdict.

    Args:
        key: (task, dataset, teacher, student) of the group.
        rows: :func:`group_rows` output for the group.

    Returns:
        list of dicts with "method", "role", "label" (its runs' names), "runs", "status"
        (complete, incomplete, missing, or "k of n complete"), "n" (complete runs), "seeds",
        "scale", "progress", "stats" ({metric: {n, mean, std}}), "gain" ({metric: {n (paired
        seeds), mean, std, ci_low, ci_high, verdict, paired}}), "verdict" (headline metric;
        "baseline" for the baseline, "" for teacher runs), "paper_<m>", "diff_<m>" (arm mean -
        paper), "paper_source", "paper_harness" (another harness than the row's; "" = the same) and
        "is_baseline".
    """
    task = key[0]
    base_arm = _baseline_arm(rows)
    out = []
    for members in _arms_of(rows).values():
        first, done = members[0], [r for r in members if r["status"] == COMPLETE]
        is_base = any(r is b for r in members for b in base_arm)
        statuses = {r["status"] for r in members}
        status = statuses.pop() if len(statuses) == 1 else f"{len(done)} of {len(members)} complete"
        progress = {_progress(r) for r in members}
        arm = {"method": first["method"], "role": first["role"], "label": _arm_label(members), "runs": members,
               "status": status, "n": len(done), "seeds": sorted({r["seed"] for r in done if r["seed"] is not None}),
               "scale": "; ".join(dict.fromkeys(r["scale"] for r in members)),
               "progress": progress.pop() if len(progress) == 1 else "mixed", "stats": {}, "gain": {},
               "paper_source": first.get("paper_source", ""), "paper_harness": first.get("paper_harness", ""),
               "is_baseline": is_base,
               "verdict": "baseline" if is_base else ""}
        for m in _metrics_of(task, rows):
            arm["stats"][m] = summarize(r["metrics"].get(m) for r in done)
            if is_base or not base_arm:
                continue
            seeds, diffs = pair_by_seed(_by_seed(members, m), _by_seed(base_arm, m))
            base_stats = summarize(r["metrics"].get(m) for r in base_arm if r["status"] == COMPLETE)
            if diffs:
                arm["gain"][m] = dict(paired_gain(diffs), paired=True, pair_seeds=seeds)
            elif arm["stats"][m]["n"] and base_stats["n"]:  # no common fixed seed: a difference of means
                one = arm["stats"][m]["n"] == 1 and base_stats["n"] == 1
                arm["gain"][m] = {"n": 1 if one else 0, "mean": arm["stats"][m]["mean"] - base_stats["mean"],
                                  "std": None, "ci_low": None, "ci_high": None, "paired": False, "pair_seeds": [],
                                  "verdict": ONE if one else UNPAIRED}
            if arm["role"] == "distilled" and m == HEADLINE[task] and m in arm["gain"]:
                arm["verdict"] = arm["gain"][m]["verdict"]
        for m in PAPER_METRICS[task]:
            if f"paper_{m}" in first:
                arm[f"paper_{m}"] = first[f"paper_{m}"]
                if arm["stats"][m]["mean"] is not None:
                    arm[f"diff_{m}"] = arm["stats"][m]["mean"] - first[f"paper_{m}"]
        out.append(arm)
    return out


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


def _mean_std(stat):
    if stat["mean"] is None:
        return "-"
    return _fmt(stat["mean"]) + (f" ± {stat['std']:.2f}" if stat["std"] is not None else "")


def _ci(g):
    return f"[{_fmt(g['ci_low'], True)}, {_fmt(g['ci_high'], True)}]" if g and g.get("ci_low") is not None else "-"


def _group_markdown(key, rows, arms, paper_datasets, plot_rel):
    task, dataset, teacher, student = key
    metrics, head = _metrics_of(task, rows), HEADLINE[task]
    pm = [m for m in PAPER_METRICS[task] if any(f"paper_{m}" in r for r in rows)]
    cols = ["Method", "Run", "Status", "Progress"] + list(metrics) + [f"Gain {head}", f"{CONFIDENCE:.0%} CI",
                                                                    "Verdict", "n", "Procs × imgs/proc"]
    cols += [f"Paper {m} (Δ)" for m in pm] + (["Source"] if pm else [])
    out = [f"## {task}: {dataset} · teacher {teacher or '-'} → student {student or '-'}", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in arms:
        g = a["gain"].get(head)
        verdict = a["verdict"] or (ONE if a["n"] == 1 else "-")
        cells = [a["method"] + (" (baseline)" if a["is_baseline"] else ""), a["label"], a["status"], a["progress"]]
        cells += [_mean_std(a["stats"][m]) for m in metrics]
        cells += [_fmt(g["mean"] if g else None, True), _ci(g), verdict, str(a["n"]), a["scale"]]
        mark = "†" if a["paper_harness"] else ""  # a delta across harnesses is never shown without saying so
        cells += [f"{_fmt(a[f'paper_{m}'])} ({_fmt(a.get(f'diff_{m}'), True)}){mark}" if f"paper_{m}" in a else "-"
                  for m in pm]
        cells += [a["paper_source"] + (f" ({a['paper_harness']})" if mark else "") or "-"] if pm else []
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if any(a["paper_harness"] for a in arms):
        out.append("† published on another harness (named in Source): that Δ compares across code bases, schedules and "
                   "teacher weights, so it is not a reproduction gap.  ")
    if not rows[0]["baseline_run"]:
        out.append("No complete student baseline run in this group: no gain over the baseline is shown.  ")
    if any(a["n"] > 1 for a in arms):
        out.append("Values with ± are mean ± std over the arm's complete seeds (n); the gain is the mean of the paired "
                   f"differences to the baseline run of the same seed, with its {CONFIDENCE:.0%} t interval.  ")
    if any(a["verdict"] == UNPAIRED for a in arms):
        out.append("'not paired': the arm and the baseline share no fixed SEED; the gain is a difference of means "
                   "without a verdict.  ")
    if rows[0]["paper_dataset"] not in paper_datasets:
        out.append(f"No paper delta: the papers report on {', '.join(sorted(paper_datasets))}, not on {dataset}.  ")
    elif not pm:
        out.append("The papers have no row for these runs (dataset, teacher, student, method).  ")
    derived = [r["run"] for r in rows if r["labels_derived"]]
    if derived:
        out.append(f"Labels derived from the config (set KD.LABEL.*): {', '.join(derived)}.  ")
    if plot_rel:
        out += ["", f"![{head} per method]({plot_rel})"]
    cats = sorted({c for r in rows for c in r["per_category"]})
    if cats:
        def cat_mean(a, c):
            return _mean_std(summarize(r["per_category"].get(c) for r in a["runs"] if r["status"] == COMPLETE))

        methods = [a["method"] for a in arms]  # an arm's label only where two arms share a method
        heads = [a["method"] + (f" ({a['label']})" if methods.count(a["method"]) > 1 else "") for a in arms]
        out += ["", "Per-category AP:", "", "| Category | " + " | ".join(heads) + " |", "|" + "---|" * (len(arms) + 1)]
        out += [f"| {c} | " + " | ".join(cat_mean(a, c) for a in arms) + " |" for c in cats]
    return out + [""]


CSV_HEAD = ["group", "task", "dataset", "paper_dataset", "teacher", "student", "method", "role", "run", "dir",
            "status", "note", "iteration", "max_iter", "baseline_run", "arm", "seed", "world_size",
            "images_per_process", "scale"]


def _write_csv(path, rows):
    metric_cols = [m for m in _all_metrics(rows) if any(m in r["metrics"] for r in rows)]
    extra = [f"{p}_{m}" for p in ("gain", "paper", "diff") for m in metric_cols if any(f"{p}_{m}" in r for r in rows)]
    cats = sorted({c for r in rows for c in r["per_category"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEAD + metric_cols + extra + ["paper_source", "paper_harness"] + [f"AP-{c}" for c in cats])
        for r in rows:
            vals = [r.get(k, "") for k in CSV_HEAD] + [r["metrics"].get(m, "") for m in metric_cols]
            vals += [r.get(k, "") for k in extra] + [r.get("paper_source", ""), r.get("paper_harness", "")]
            w.writerow(["" if v is None else v for v in vals] + [r["per_category"].get(c, "") for c in cats])


SUMMARY_HEAD = ["group", "task", "dataset", "teacher", "student", "method", "role", "runs", "status", "n", "seeds",
                "scale", "verdict"]


def _write_summary_csv(path, groups):
    """One line per arm: mean / std / n of every metric, paired gain with its CI, verdict, paper delta."""
    metric_cols = [m for m in _all_metrics([r for _, arms in groups for a in arms for r in a["runs"]])
                   if any(a["stats"].get(m, {}).get("n") for _, arms in groups for a in arms)]
    stat_cols = [f"{s}_{m}" for m in metric_cols for s in ("mean", "std", "n")]
    gain_cols = [f"{s}_{m}" for m in metric_cols for s in ("gain", "gain_std", "gain_ci_low", "gain_ci_high",
                                                            "gain_n_pairs", "verdict")]
    paper_cols = [f"{p}_{m}" for m in metric_cols for p in ("paper", "diff")
                  if any(f"{p}_{m}" in a for _, arms in groups for a in arms)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_HEAD + stat_cols + gain_cols + paper_cols + ["paper_source", "paper_harness"])
        for key, arms in groups:
            for a in arms:
                vals = [" / ".join(x or "-" for x in key), *key[:4], a["method"], a["role"], a["label"], a["status"],
                        a["n"], " ".join(map(str, a["seeds"])), a["scale"], a["verdict"]]
                for m in metric_cols:
                    st = a["stats"].get(m, {})
                    vals += [st.get("mean"), st.get("std"), st.get("n")]
                for m in metric_cols:
                    g = a["gain"].get(m) or {}
                    vals += [g.get("mean"), g.get("std"), g.get("ci_low"), g.get("ci_high"),
                             g.get("n") if g.get("paired") else (0 if g else None), g.get("verdict")]
                vals += [a.get(k) for k in paper_cols] + [a["paper_source"], a["paper_harness"]]
                w.writerow(["" if v is None else v for v in vals])


def _unique_names(run_dirs, names):
    """Display names: the given name, else the directory's base name (parent added on a clash)."""
    base = [names.get(d) or os.path.basename(os.path.normpath(d)) for d in run_dirs]
    return [b if base.count(b) == 1 or names.get(d) else "/".join(os.path.normpath(d).split(os.sep)[-2:])
            for b, d in zip(base, run_dirs)]


def _group_plot(key, arms, out_dir):
    """Draw the group's headline metric per method (mean, ± std error bars over seeds); returns the PNG path
    relative to ``out_dir``."""
    head = HEADLINE[key[0]]
    entries = []
    for a in arms:
        st = a["stats"][head]
        name = a["label"] if len(a["runs"]) == 1 else f"{a['runs'][0]['run']}, …"
        tick = f"{a['method']}\n{name}" + (f" (n = {a['n']})" if a["n"] > 1 else "")
        entries.append({"label": name if a["role"] != "distilled" else tick, "role": a["role"],
                        "value": st["mean"], "err": st["std"], "n": a["n"], "paper": a.get(f"paper_{head}")})
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


def _multiplicity(all_arms):
    """The sentence saying how many methods got a verdict (no correction for multiple comparisons)."""
    distilled = [a for _, arms in all_arms for a in arms if a["role"] == "distilled"]
    judged = [a for a in distilled if a["verdict"] in (BETTER, WORSE, NOISE)]
    single = sum(a["verdict"] == ONE or (not a["verdict"] and a["n"] == 1) for a in distilled)
    hits = sum(a["verdict"] in (BETTER, WORSE) for a in judged)
    if not distilled:
        return "Verdicts: none (no distilled run to compare with a baseline)."
    if not judged:
        return (f"Verdicts: none — {len(distilled)} distilled arm(s), {single} with one seed (n = 1): a one-seed "
                "difference is not evidence of a gain; run several seeds (tools/sweep.py --seeds 0 1 2).")
    return (f"Verdicts: {len(judged)} method(s) compared with their baseline over paired seeds, each at "
            f"{CONFIDENCE:.0%} confidence with no multiplicity correction: even if no method differed, about "
            f"{(1 - CONFIDENCE) * len(judged):.2f} 'better'/'worse' verdict(s) would be expected by chance "
            f"({hits} given). {single} more distilled arm(s) have one seed (n = 1, no verdict).")


def build_report(run_dirs, out_dir, names=None, paper_csv=None, title="AP / top-1 report", plots=True):
    """Read every run, write ``report.md``, ``report.csv`` (one line per run), ``summary.csv`` (one line per
    arm) and ``plots/*.png`` under ``out_dir``.

    Args:
        run_dirs: run directories (detection or classification OUTPUT_DIRs), in display order.
        out_dir: folder to write into (created).
        names: optional {run_dir: display name}.
        paper_csv: papers' numbers (default: the packaged ``kd_det/data/paper_results.csv``).
        title: first heading of ``report.md``.
        plots: also draw the PNG plots.

    Returns:
        dict with "markdown" (the report text), "summary" (its tables without plots, for a
        console), "rows" (one per run, missing runs included), "arms" (one per arm of each group:
        seeds pooled, see :func:`group_arms`), "runs", "files" (paths written: report.md,
        report.csv, summary.csv, then the plots), "batch_split_flags" (see
        :func:`~kd_det.evaluation.batch_split.batch_split_flags`) and "problems" (one line per
        missing or incomplete run).
    """
    names = names or {}
    runs = [read_run(d, n) for d, n in zip(run_dirs, _unique_names(run_dirs, names))]
    paper = load_paper_results(paper_csv)
    groups, unplaced = group_runs(runs)
    os.makedirs(os.path.join(out_dir, "plots") if plots else out_dir, exist_ok=True)
    files, rows, body, all_arms = [], [], [], []
    for key, members in groups.items():
        g_rows = group_rows(key, members, paper)
        arms = group_arms(key, g_rows)
        rows += g_rows
        all_arms.append((key, arms))
        rel = _group_plot(key, arms, out_dir) if plots else None
        files += [os.path.join(out_dir, rel)] if rel else []
        body += _group_markdown(key, g_rows, arms, {k[0] for k in paper}, rel)
    rows += [dict(r, group="", role="", baseline_run="", paper_source="", arm="") for r in unplaced]
    bad = [r for r in runs if r["status"] != COMPLETE]
    counts = ", ".join(f"{sum(r['status'] == s for r in runs)} {s}" for s in ("complete", "incomplete", "missing"))
    md = [f"# {title}", "", f"{len(runs)} run(s): {counts}. Generated {time.strftime('%Y-%m-%d %H:%M')}; paper "
          f"numbers from {paper_csv or 'kd_det/data/paper_results.csv'} (source per row). Gain: difference to the "
          "group's student baseline (paired by seed); Δ: this run (the arm's mean) minus the paper. "
          "Procs × imgs/proc: training processes × images per process of each launch (run_info.json; contrastive "
          "losses draw negatives from each process's own RoIs).", "", _multiplicity(all_arms), ""] + body
    if bad:
        md += ["## Missing or incomplete runs", "", "| Run | Directory | Status | Why |", "|---|---|---|---|"]
        md += [f"| {r['run']} | {r['dir']} | {r['status']} | {r['note'] or '-'} |" for r in bad] + [""]
    split_flags = batch_split_flags(runs)
    if split_flags:
        md += ["## Batch split unlike the reference", ""] + [f"- {line}" for line in split_flags] + [""]
    summary = re.sub(r"\n{3,}", "\n\n", "\n".join(line for line in md if not line.startswith("!["))).rstrip() + "\n"
    curves_md, curve_files = _curves_section(runs, out_dir) if plots else ([], [])
    text = "\n".join(md + curves_md).rstrip() + "\n"
    md_path, csv_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.csv")
    summary_path = os.path.join(out_dir, "summary.csv")
    with open(md_path, "w") as f:
        f.write(text)
    _write_csv(csv_path, rows)
    _write_summary_csv(summary_path, all_arms)
    return {"markdown": text, "summary": summary, "rows": rows, "runs": runs,
            "arms": [dict(a, group=key) for key, arms in all_arms for a in arms],
            "files": [md_path, csv_path, summary_path] + files + curve_files,
            "batch_split_flags": split_flags,
            "problems": [f"{r['run']}: {r['status']} ({r['note'] or 'no reason recorded'})" for r in bad]}
