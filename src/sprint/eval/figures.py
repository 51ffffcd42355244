"""The report's PNG figures (matplotlib, Agg backend: no display needed).

* `accuracy_vs_sequential_tokens.png` (paper Fig. 4): per task, accuracy within a sequential-token budget for every
  run, and each run's mean sequential tokens against its accuracy with a 95% interval.
* `stages_by_level.png` (Fig. 5): stages per problem by MATH difficulty level, and how many had more than one prompt.
* `sequential_token_reduction.png` (Fig. 6): reduction of sequential tokens against the sequential baseline, on
  matched items, binned by the baseline's length.
* `runtime.png`: per item, the runtime estimated from per-call timings against the measured wall-clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLE = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.dpi": 100, "savefig.dpi": 150}
MARKERS = {"sprint": "o", "sequential": "s", "sc": "^", "sot": "D"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(series) -> dict[str, Any]:
    plt = _plt()
    cycle = plt.get_cmap("tab10").colors
    return {s.label: cycle[k % len(cycle)] for k, s in enumerate(series)}


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: f"{x:,.0f}")


def _panels(n: int, height: float = 5.0):
    """A figure with `n` panels side by side (each 7.5 inches wide) and its row of axes."""
    fig, axes = _plt().subplots(1, n, figsize=(7.5 * n, height), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    _plt().close(fig)
    return path


def accuracy_vs_tokens(series, report: dict, out: Path) -> Path | None:
    graded = [s for s in series if s.items and all(it.correct is not None for it in s.items)
              and any(it.sequential_tokens is not None for it in s.items)]
    if not graded:
        return None
    plt = _plt()
    colors = _colors(series)
    rows = {r["label"]: r for r in report["series"]}
    tasks = sorted({s.task for s in graded})
    with plt.rc_context(STYLE):
        fig, axes = _panels(len(tasks), 5.2)
        for ax, task in zip(axes, tasks):
            for s in (s for s in graded if s.task == task):
                n = len(s.items)
                toks = sorted(it.sequential_tokens for it in s.items if it.correct and it.sequential_tokens is not None)
                xs = [0] + toks
                ys = [0] + [100 * (k + 1) / n for k in range(len(toks))]
                r = rows[s.label]
                ax.step(xs, ys, where="post", color=colors[s.label], lw=1.6, alpha=0.8,
                        label=f"{s.label} ({s.method}, n={n}): share solved within the budget")
                lo, hi = r["accuracy_ci95"]
                acc = 100 * r["accuracy"]
                ax.errorbar([r["mean_sequential_tokens"]], [acc], yerr=[[acc - 100 * lo], [100 * hi - acc]],
                            fmt=MARKERS.get(s.method, "o"), ms=9, color=colors[s.label], capsize=5, mec="black",
                            label=f"{s.label}: accuracy {acc:.1f}% at mean {r['mean_sequential_tokens']:,.0f} tokens")
            ax.set_title(f"Accuracy vs sequential tokens: {task}")
            ax.set_xlabel("sequential tokens per problem (curves: budget; markers: mean)")
            ax.xaxis.set_major_formatter(_thousands())
            ax.set_ylabel("accuracy (% of all problems)")
            ax.set_ylim(0, 100)
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", frameon=True)
        return _save(fig, out / "accuracy_vs_sequential_tokens.png")


def stages_by_level(report: dict, out: Path) -> Path | None:
    entries = report["stages_by_level"]
    if not entries:
        return None
    plt = _plt()
    with plt.rc_context(STYLE):
        fig, axes = _panels(len(entries))
        for ax, e in zip(axes, entries):
            levels = [lv["level"] for lv in e["levels"]]
            allst = [lv["mean_stages"] for lv in e["levels"]]
            multi = [lv["mean_multi_prompt_stages"] for lv in e["levels"]]
            x = range(len(levels))
            w = 0.38
            b1 = ax.bar([i - w / 2 for i in x], allst, w, label="all stages", color="tab:blue")
            b2 = ax.bar([i + w / 2 for i in x], multi, w, label="stages with more than one prompt",
                        color="tab:orange")
            ax.bar_label(b1, fmt="%.1f", padding=2)
            ax.bar_label(b2, fmt="%.1f", padding=2)
            ax.set_xticks(list(x), [f"Level {lv}\n(n={d['n']})" for lv, d in zip(levels, e["levels"])])
            ax.set_xlabel("MATH difficulty level")
            ax.set_ylabel("stages per problem (mean)")
            ax.set_title(f"Stages per problem by difficulty: {e['label']}")
            ax.set_ylim(0, max(allst) * 1.18)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(loc="upper left")
        return _save(fig, out / "stages_by_level.png")


def reduction(report: dict, out: Path) -> Path | None:
    entries = [e for e in report["reduction"] if e["bins"]]
    if not entries:
        return None
    plt = _plt()
    with plt.rc_context(STYLE):
        fig, axes = _panels(len(entries))
        for ax, e in zip(axes, entries):
            vals = [100 * b["reduction"] for b in e["bins"]]
            x = range(len(vals))
            bars = ax.bar(list(x), vals, 0.6, color=["tab:green" if v >= 0 else "tab:red" for v in vals])
            ax.bar_label(bars, labels=[f"{v:.0f}%" for v in vals], padding=2)
            ax.axhline(100 * e["reduction"], color="black", ls="--", lw=1.2,
                       label=f"all {e['n']} matched items: {100 * e['reduction']:.0f}%")
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(list(x), [f"{b['baseline_min']:,.0f}-{b['baseline_max']:,.0f}\n(n={b['n']})"
                                    for b in e["bins"]])
            ax.set_xlabel(f"length of the sequential baseline ({e['baseline']}), in sequential tokens")
            ax.set_ylabel("sequential-token reduction (%)\n(below 0: longer than the baseline)")
            ax.set_title(f"Sequential-token reduction of {e['label']} vs {e['baseline']}")
            lo = min(0, min(vals), 100 * e["reduction"]) * 1.2 - 5
            ax.set_ylim(lo, max(20, max(vals), 100 * e["reduction"]) * 1.2 + 5)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(loc="upper left")
        return _save(fig, out / "sequential_token_reduction.png")


def runtime(series, out: Path) -> Path | None:
    timed = [s for s in series if any(it.runtime_estimate_s is not None and it.wall_clock_s is not None
                                      for it in s.items)]
    if not timed:
        return None
    plt = _plt()
    colors = _colors(series)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 6))
        top = 0.0
        for s in timed:
            pts = [(it.runtime_estimate_s, it.wall_clock_s) for it in s.items
                   if it.runtime_estimate_s is not None and it.wall_clock_s is not None]
            xs, ys = zip(*pts)
            top = max(top, max(xs), max(ys))
            ax.scatter(xs, ys, s=22, alpha=0.7, color=colors[s.label], marker=MARKERS.get(s.method, "o"),
                       label=f"{s.label} (n={len(pts)}): mean estimate {sum(xs) / len(xs):.2f} s, "
                             f"measured {sum(ys) / len(ys):.2f} s")
        ax.plot([0, top * 1.05], [0, top * 1.05], color="grey", ls="--", lw=1, label="measured = estimate")
        ax.set_xlim(0, top * 1.05)
        ax.set_ylim(0, top * 1.05)
        ax.set_xlabel("estimated runtime (s): TTFT + decode along the critical path")
        ax.set_ylabel("measured wall-clock per problem (s)")
        ax.set_title("Runtime estimate vs measured wall-clock")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
        return _save(fig, out / "runtime.png")


def draw_all(series, report: dict, out: Path) -> list[Path]:
    made = [accuracy_vs_tokens(series, report, out), stages_by_level(report, out), reduction(report, out),
            runtime(series, out)]
    return [p for p in made if p is not None]
