"""The report's numbers in sentences: one place for the wording of comparisons and
test-set checks, used by the report documents (never by a renderer).

The facts (`Comparison`, `TestSetCheck`) hold numbers; each function here turns one
into the sentence every format shows.
"""

from __future__ import annotations

from cnnlab.reporting.analysis import Comparison, TestSetCheck, Untested

_UNTESTED = {
    Untested.ONE_SEED: "only one seed: run more seeds to tell a difference from noise",
    Untested.NOT_FINITE: "a seed's value is not finite (diverged?), so the test "
    "cannot run",
    Untested.NO_VARIANCE: "every seed gave the same value on both sides, so no test "
    "can run",
}
_MEANING = {
    True: "larger than seed-to-seed noise",
    False: "within seed noise, not a ranking",
}


def comparison_text(c: Comparison) -> str:
    """One sentence: "<label>: 99.16% (n = 3), best val_acc." for the best, else the
    means, the difference, the test and what it means."""
    as_percent = c.metric.endswith("acc")
    if c.label == c.best_label:
        mean = metric_text(c.mean, as_percent)
        return f"{c.label}: {mean} (n = {c.n}), best {c.metric}."
    said = (
        f"{c.label}: {metric_text(c.mean, as_percent)} vs "
        f"{metric_text(c.best_mean, as_percent)} for {c.best_label}, "
        f"difference {difference_text(c.difference, as_percent)}"
    )
    reason = _UNTESTED.get(c.untested, "") if c.untested else ""
    if c.p_value is not None and c.p_holm is not None:
        said += f", Welch's t-test {p_text(c.p_value)}"
        if c.family > 1:  # one comparison: Holm's correction changes nothing
            said += f", Holm-adjusted {p_text(c.p_holm)}"
        reason = _MEANING[bool(c.significant)]
    return f"{said} (n = {c.n} vs {c.best_n}): {reason}."


def test_check_text(check: TestSetCheck) -> str:
    """The accuracy gap beside the test set's sampling error, then McNemar's test."""
    label, best = check.label, check.best_label
    parts = []
    if check.difference is not None:
        said = (
            f"{label} vs {best} on the test set: {check.difference * 100:+.2f} points"
        )
        se = check.sampling_error
        if se is not None:
            side = "below" if abs(check.difference) < se else "above"
            images = f"{check.test_images:,}" if check.test_images else "?"
            said += (
                f", {side} the test set's own sampling error ({se * 100:.2f} points, "
                f"binomial SE on {images} images)"
            )
        parts.append(said + ".")
    pooled = check.pooled
    if pooled is not None:
        seeds = len(check.per_seed)
        over = "1 matched seed" if seeds == 1 else f"{seeds} matched seeds, pooled"
        said = (
            f"McNemar's exact test ({over}): {pooled.only_a} images right only for "
            f"{label}, {pooled.only_b} only for {best}, {p_text(pooled.p_value)}"
        )
        if seeds > 1:
            said += "; per seed " + ", ".join(
                f"s{seed} {p_text(m.p_value)}" for seed, m in check.per_seed
            )
        parts.append(said + ".")
    else:
        parts.append("No per-image test predictions on matched seeds: no McNemar test.")
    return " ".join(parts)


def metric_text(value: float, as_percent: bool) -> str:
    return f"{value:.2%}" if as_percent else f"{value:.4f}"


def difference_text(value: float, as_percent: bool) -> str:
    return f"{value * 100:+.2f} points" if as_percent else f"{value:+.4f}"


def p_text(p: float) -> str:
    """Two significant digits; below 0.0001 only the bound, never 1e-05 notation."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def count_text(n: int, noun: str) -> str:
    """'1 comparison', '3 comparisons'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
