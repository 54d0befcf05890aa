"""Seed statistics of a report: mean +- std over seeds and the paired gain over the baseline with its
95% confidence interval (Student's t with n - 1 degrees of freedom, from scipy).

A verdict is given only when there are at least two paired seeds: "better" / "worse" when the
interval excludes zero, "within noise" when it contains it. One seed gives "n = 1" and no verdict.
No correction for comparing several methods is applied; the report says how many were compared.
"""
import math

__all__ = ["CONFIDENCE", "BETTER", "WORSE", "NOISE", "ONE", "UNPAIRED", "summarize", "paired_gain", "pair_by_seed"]

CONFIDENCE = 0.95
BETTER, WORSE, NOISE, ONE, UNPAIRED = "better", "worse", "within noise", "n = 1", "not paired"


def summarize(values):
    """{"n", "mean", "std"} of finite ``values``; std is the sample std (n - 1), None below two values."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(vals)
    if not n:
        return {"n": 0, "mean": None, "std": None}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "std": std}


def pair_by_seed(arm, base):
    """Differences arm - base of the seeds both have: ``arm`` and ``base`` are {seed: value}.

    Returns:
        (list of seeds, list of differences), seeds in increasing order.
    """
    seeds = sorted(set(arm) & set(base))
    return seeds, [arm[s] - base[s] for s in seeds]


def paired_gain(diffs, confidence=CONFIDENCE):
    """Mean paired difference, its std, the ``confidence`` t interval and the verdict.

    Args:
        diffs: per-seed differences (distilled - baseline, same seed).

    Returns:
        dict with "n", "mean", "std", "ci_low", "ci_high" (None below two differences) and
        "verdict" (better / worse / within noise, "n = 1" for one difference, "" for none).
    """
    s = summarize(diffs)
    out = dict(s, ci_low=None, ci_high=None, verdict="")
    if s["n"] == 1:
        out["verdict"] = ONE
    elif s["n"] >= 2:
        from scipy import stats

        half = stats.t.ppf(0.5 + confidence / 2, s["n"] - 1) * s["std"] / math.sqrt(s["n"])
        out["ci_low"], out["ci_high"] = s["mean"] - half, s["mean"] + half
        out["verdict"] = BETTER if out["ci_low"] > 0 else WORSE if out["ci_high"] < 0 else NOISE
    return out
