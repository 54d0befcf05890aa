"""Read a run directory's own outputs (config.yaml, evaluation.json, metrics.json)."""
import json
import os

__all__ = ["read_run", "markdown_table"]


def read_run(run_dir):
    """Summary of one run: {"run", "status", "config": {...}, "bbox": {AP...}, "iteration"}.

    ``status`` is "complete", "no evaluation" (trained but not evaluated) or "missing".
    """
    out = {"run": os.path.basename(os.path.normpath(run_dir)), "dir": run_dir, "status": "missing", "bbox": {}}
    if not os.path.isdir(run_dir):
        return out
    cfg_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(cfg_path):
        import yaml

        with open(cfg_path) as f:
            out["config"] = yaml.safe_load(f)
    ev_path = os.path.join(run_dir, "evaluation.json")
    if not os.path.isfile(ev_path):
        out["status"] = "no evaluation"
        return out
    with open(ev_path) as f:
        ev = json.load(f)
    results = ev.get("results", {})
    if results:
        dataset = sorted(results)[0]
        out.update(status="complete", dataset=dataset, bbox=results[dataset].get("bbox", {}),
                   iteration=ev.get("iteration"))
    return out


def markdown_table(rows, columns=("AP", "AP50", "AP75", "APs", "APm", "APl")):
    """Markdown table of :func:`read_run` summaries (one line per run, "-" where missing)."""
    head = "| run | status | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for r in rows:
        vals = [f"{r['bbox'][c]:.2f}" if c in r["bbox"] else "-" for c in columns]
        lines.append(f"| {r.get('label', r['run'])} | {r['status']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
