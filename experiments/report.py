"""The analyst's view of an :class:`~experiments.analysis.Analysis`: a printed table, an HTML
report with plots, and both logged to MLflow as artifacts of the experiment's run.

Plots (matplotlib, embedded in the HTML as PNG data): lift per metric with its confidence
interval (and the bootstrap one), the primary metric's cumulative lift day by day with its
always-valid confidence sequence, assignment balance (users per arm against the split) and
the guardrails. The MLflow run lives in the MLflow experiment ``reelrank-experiments``; one run
per A/B experiment, named after it, re-used by every analysis (its id is kept on the row).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from core.config import Settings  # noqa: E402
from experiments.analysis import Analysis  # noqa: E402
from experiments.catalog import METRICS  # noqa: E402

MLFLOW_EXPERIMENT = "reelrank-experiments"


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x * 100:+.2f}%" if pct else f"{x:.4g}"


def text_table(a: Analysis) -> str:
    """The results as the terminal shows them."""
    lines = [f"experiment {a.experiment['name']} ({a.experiment['status']}), control "
             f"{a.control}; users per arm: " + ", ".join(
                 f"{arm} {int(r.users)}" for arm, r in a.arms.iterrows()),
             f"SRM chi2={_fmt(a.srm_chi2)} p={_fmt(a.srm_pvalue)}"
             + ("  ** SAMPLE RATIO MISMATCH: do not trust these results **" if a.srm else "  ok")
             + (f"; {a.excluded_users} users seen in several arms excluded"
                if a.excluded_users else ""),
             ""]
    head = (f"{'variant':<12}{'metric':<22}{'control':>10}{'treat.':>10}{'lift':>9}"
            f"{'95% CI':>22}{'p':>10}{'p_adj':>10}{'p_seq':>10}  cuped")
    lines.append(head)
    for arm, comps in a.comparisons.items():
        for c in comps:
            ci = f"[{_fmt(c.rel_lo, True)}, {_fmt(c.rel_hi, True)}]"
            lines.append(f"{arm:<12}{c.metric:<22}{_fmt(c.control):>10}{_fmt(c.treatment):>10}"
                         f"{_fmt(c.rel, True):>9}{ci:>22}{_fmt(c.pvalue):>10}"
                         f"{_fmt(c.pvalue_adj):>10}{_fmt(c.seq_pvalue):>10}  "
                         f"{'yes' if c.cuped else 'no'}")
    if a.guardrails:
        lines += ["", "guardrails:"]
        for g in a.guardrails:
            lines.append(f"  {g.variant:<12}{g.metric:<16} control {_fmt(g.control)} "
                         f"treatment {_fmt(g.treatment)} [{_fmt(g.lo)}, {_fmt(g.hi)}] "
                         + ("BREACHED" if g.breached else "ok"))
    return "\n".join(lines)


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def lift_figure(a: Analysis) -> plt.Figure:
    """Relative lift per metric and arm with the t-test CI (bar) and the bootstrap CI (tick)."""
    rows = [(arm, c) for arm, comps in a.comparisons.items() for c in comps]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(rows), 2) + 1))
    for y, (_, c) in enumerate(rows):
        color = "tab:green" if c.rel_lo > 0 else "tab:red" if c.rel_hi < 0 else "tab:gray"
        ax.errorbar(c.rel * 100, y, xerr=[[max(0.0, (c.rel - c.rel_lo) * 100)],
                                          [max(0.0, (c.rel_hi - c.rel) * 100)]],
                    fmt="o", color=color, capsize=3)
        if c.control and math.isfinite(c.boot_lo):
            ax.plot([c.boot_lo / c.control * 100, c.boot_hi / c.control * 100], [y - 0.2] * 2,
                    color=color, alpha=0.4, lw=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{arm}: {c.metric}" for arm, c in rows])
    ax.invert_yaxis()
    ax.set_xlabel("lift vs control, % (bar: CI; shade: bootstrap CI)")
    return fig


def cumulative_figure(a: Analysis) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for arm, cum in a.cumulative.items():
        ax.plot(cum["day_end"], cum["diff"], marker="o", label=f"{arm} - {a.control}")
        ax.fill_between(cum["day_end"], cum["seq_lo"].clip(-1e9, 1e9),
                        cum["seq_hi"].clip(-1e9, 1e9), alpha=0.2)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(f"{a.experiment['primary_metric']} diff")
    ax.set_title("cumulative difference, always-valid 95% confidence sequence")
    ax.legend()
    fig.autofmt_xdate()
    return fig


def balance_figure(a: Analysis) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    x = range(len(a.arms))
    ax.bar(x, a.arms["observed_share"] * 100, label="observed", alpha=0.7)
    ax.scatter(x, a.arms["expected_share"] * 100, color="black", marker="_", s=400,
               label="planned", zorder=3)
    ax.set_xticks(list(x), list(a.arms.index))
    ax.set_ylabel("% of users")
    ax.set_title(f"assignment balance (SRM p = {_fmt(a.srm_pvalue)})")
    ax.legend()
    return fig


def guardrail_figure(a: Analysis) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    for y, g in enumerate(a.guardrails):
        ax.errorbar(g.treatment, y, xerr=[[max(0.0, g.treatment - g.lo)] if g.metric.startswith(
            "latency") else [0.0], [max(0.0, g.hi - g.treatment)] if g.metric.startswith(
            "latency") else [0.0]], fmt="o", color="tab:red" if g.breached else "tab:blue")
        ax.scatter(g.control, y, marker="|", s=300, color="black")
    ax.set_yticks(range(len(a.guardrails)), [f"{g.variant}: {g.metric}" for g in a.guardrails])
    ax.set_title("guardrails (|: control)")
    return fig


def html_report(a: Analysis) -> str:
    """A self-contained HTML page: the table, the plots, the definition."""
    table = a.table()
    shown = table.assign(**{c: table[c].map(lambda t: f"[{_fmt(t[0])}, {_fmt(t[1])}]")
                             for c in ("ci", "rel_ci", "boot_ci", "seq_ci")}) if len(table) \
        else table
    figures = [("Lift per metric", lift_figure(a)), ("Assignment balance", balance_figure(a))]
    if a.cumulative:
        figures.insert(1, ("Cumulative lift", cumulative_figure(a)))
    if a.guardrails:
        figures.append(("Guardrails", guardrail_figure(a)))
    exp = a.experiment
    srm = ("<p class=bad>Sample ratio mismatch: the users per arm do not match the split; "
           "the assignment or the logging is broken and the results cannot be trusted.</p>"
           if a.srm else "<p>No sample ratio mismatch.</p>")
    parts = [
        f"<h1>Experiment {html.escape(exp['name'])}</h1>",
        f"<p><b>Hypothesis:</b> {html.escape(exp['hypothesis'] or '-')}</p>",
        f"<p>status {exp['status']}, layer {html.escape(exp['layer'])}, traffic "
        f"{exp['traffic']:g} %, holdout {exp['holdout']:g} %, started {exp['started_at']}, "
        f"stopped {exp['stopped_at']}; primary metric <b>{exp['primary_metric']}</b> "
        f"({METRICS[exp['primary_metric']].label}).</p>",
        f"<h2>Assignment</h2>{a.arms.to_html(float_format='{:.4g}'.format)}"
        f"<p>SRM chi-square {_fmt(a.srm_chi2)}, p = {_fmt(a.srm_pvalue)}; "
        f"{a.excluded_users} users seen in several arms excluded.</p>{srm}",
        "<h2>Results</h2><p>Welch's t-test (CUPED-adjusted where <i>cuped</i>), bootstrap "
        "interval, Benjamini-Hochberg adjusted p (<i>p_adj</i>), always-valid mSPRT p-value "
        "and confidence sequence (<i>p_seq</i>, <i>seq_ci</i>).</p>",
        shown.to_html(index=False, float_format="{:.4g}".format),
        "<h2>Guardrails</h2>" + (pd.DataFrame([g.__dict__ for g in a.guardrails]).to_html(
            index=False, float_format="{:.4g}".format) if a.guardrails else "<p>none</p>"),
    ]
    parts += [f"<h2>{t}</h2><img src='data:image/png;base64,{_png(f)}'>" for t, f in figures]
    style = ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
             "padding:2px 6px}.bad{color:#b00;font-weight:bold}</style>")
    return f"<!doctype html><html><head><meta charset=utf-8>{style}</head><body>" \
           + "\n".join(parts) + "</body></html>"


def write(a: Analysis, out_dir: Path) -> Path:
    """The report and the results table (CSV) into ``out_dir``; the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{a.experiment['name']}.html"
    path.write_text(html_report(a))
    a.table().to_csv(out_dir / f"{a.experiment['name']}.csv", index=False)
    return path


def log_to_mlflow(settings: Settings, a: Analysis, report: Path,
                  run_id: str | None) -> str:
    """Log the report, the table and the headline numbers to the experiment's MLflow run
    (created on first use); returns the run id."""
    import mlflow

    from training import registry

    registry.configure(settings, MLFLOW_EXPERIMENT)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else a.experiment["name"]) \
            as run:
        if run_id is None:
            mlflow.set_tags({"ab.experiment": a.experiment["name"],
                             "ab.primary_metric": a.experiment["primary_metric"]})
        mlflow.log_artifact(str(report), "report")
        mlflow.log_artifact(str(report.with_suffix(".csv")), "report")
        values = {"srm_pvalue": a.srm_pvalue, "excluded_users": float(a.excluded_users)}
        for arm, comps in a.comparisons.items():
            for c in comps:
                values[f"{arm}.{c.metric}.rel"] = c.rel
                values[f"{arm}.{c.metric}.p_seq"] = c.seq_pvalue
        registry.log_metrics({k: v for k, v in values.items() if math.isfinite(v)})
        return run.info.run_id
