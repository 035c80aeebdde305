"""A study as a report to hand to colleagues: one self-contained HTML page plus its PNGs.

The page embeds its figures (base64 PNG), so it can be mailed or attached as one
file; the same figures sit beside it as PNG files for slides. It reads only the
study, the record of truth, so a report of a running search shows where it is.

Figures: Pareto fronts (accuracy vs MACs, accuracy vs latency) with the budget
line, search progress (best feasible accuracy vs trial number), and each top
student's architecture drawn stage by stage; then a table of the numbers.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from searchkd.errors import SearchKDError  # noqa: E402
from searchkd.study import (  # noqa: E402
    hand_designed_name,
    is_feasible,
    is_trained,
    pareto_front,
    pick_explained,
    ranked_students,
)
from searchkd.trials import summarize  # noqa: E402

COLORS = {"front": "#d62728", "feasible": "#1f77b4", "over": "#ff7f0e", "budget": "#555555"}


@dataclass
class Report:
    """What `write_report` wrote."""

    html: Path
    figures: list[Path]


def write_report(study: optuna.Study, out_dir: str | Path, top: int = 3) -> Report:
    """Write ``index.html`` and the PNG figures of a study into ``out_dir``."""
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if is_trained(t)]
    if not any(is_feasible(t) for t in trained):
        raise SearchKDError(
            f"study {study.study_name!r} has no trained feasible trial yet; run "
            "`searchkd search` until one completes"
        )
    if top < 1:
        raise SearchKDError(f"--top {top}: show at least one student (--top 1 or more)")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchKDError(
            f"cannot create report folder {out} ({exc.strerror}); pass --out to a folder "
            "you can write"
        ) from None
    budget = study.user_attrs.get("budget") or {}
    front = pareto_front(study)
    ranked = ranked_students(study)
    students = ranked[:top]
    figures: list[tuple[str, Any]] = [
        ("pareto_macs.png", _front_figure(trained, front, "macs", budget.get("macs"))),
        (
            "pareto_latency.png",
            _front_figure(trained, front, "latency_ms", budget.get("latency_ms")),
        ),
        ("progress.png", _progress_figure(trials)),
    ]
    figures += [(f"student_{t.number}.png", _architecture_figure(t)) for t in students]
    paths, embedded = [], {}
    for name, figure in figures:
        path = out / name
        try:
            figure.savefig(path, dpi=110, bbox_inches="tight")
        except OSError as exc:
            raise SearchKDError(
                f"cannot write {path} ({exc.strerror}); pass --out to a folder you can write"
            ) from None
        finally:
            plt.close(figure)
        paths.append(path)
        embedded[name] = base64.b64encode(path.read_bytes()).decode("ascii")
    page = out / "index.html"
    page.write_text(_html(study, trials, front, students, pick_explained(study, ranked), embedded))
    return Report(html=page, figures=paths)


# --- figures --------------------------------------------------------------------------
_AXIS = {"macs": ("MACs (millions)", 1e-6, 1), "latency_ms": ("latency (ms, batch 1)", 1.0, 2)}


def _front_figure(trained: list[FrozenTrial], front: list[FrozenTrial], metric: str, limit):
    """Accuracy against one cost: every trained student, the front, the budget line."""
    label, scale, index = _AXIS[metric]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    groups = {
        "within budget": [t for t in trained if is_feasible(t)],
        "over budget (trained)": [t for t in trained if not is_feasible(t)],
    }
    for (name, group), color in zip(
        groups.items(), (COLORS["feasible"], COLORS["over"]), strict=True
    ):
        points = [(t.values[index] * scale, t.values[0]) for t in group]
        points = [(x, y) for x, y in points if math.isfinite(x)]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.scatter(xs, ys, s=22, color=color, alpha=0.7, label=name)
    line = sorted((t.values[index] * scale, t.values[0]) for t in front)
    line = [(x, y) for x, y in line if math.isfinite(x)]
    if line:
        xs, ys = zip(*line, strict=True)
        axes.plot(xs, ys, "o-", color=COLORS["front"], label="Pareto front (all objectives)")
    if limit is not None:
        axes.axvline(limit * scale, color=COLORS["budget"], linestyle="--", label="budget")
    else:
        axes.set_title(f"no {metric} budget", fontsize=9, loc="right")
    axes.set_xlabel(label)
    axes.set_ylabel("proxy accuracy (last epoch)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return figure


def _progress_figure(trials: list[FrozenTrial]):
    """Each trained student's accuracy and the best feasible one so far, by trial number."""
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    curve = best_feasible_so_far(trials)
    numbers, best = [n for n, _ in curve], [b for _, b in curve]
    trained = [t for t in done if is_trained(t)]
    axes.scatter(
        [t.number for t in trained],
        [t.values[0] for t in trained],
        s=14,
        color=COLORS["feasible"],
        alpha=0.5,
        label="trained student",
    )
    axes.step(numbers, best, where="post", color=COLORS["front"], label="best feasible so far")
    rejected = sum(1 for t in done if not is_trained(t))
    axes.set_title(f"{len(trained)} trained, {rejected} rejected over budget", fontsize=9)
    axes.set_xlabel("trial number (rejected candidates included)")
    axes.set_ylabel("proxy accuracy (last epoch)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return figure


def best_feasible_so_far(trials: list[FrozenTrial]) -> list[tuple[int, float]]:
    """(trial number, best accuracy of a trained feasible student up to it), from the first
    such student on; rejected and failed trials keep the curve flat."""
    curve, running = [], None
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state != TrialState.COMPLETE:
            continue
        if is_trained(trial) and is_feasible(trial):
            running = trial.values[0] if running is None else max(running, trial.values[0])
        if running is not None:
            curve.append((trial.number, running))
    return curve


def _stage_label(stage: dict[str, Any]) -> str:
    if "block" in stage:
        text = f"{stage['block']} k{stage.get('kernel')}"
        if stage.get("block") == "mbconv":
            text += f" e{stage.get('expansion')}"
        if stage.get("se"):
            text += " SE"
        return f"{text}\nx{stage.get('layers')}  c{stage.get('channels')}  s{stage.get('stride')}"
    return f"x{stage.get('depth')}  c{stage.get('channels')}\ns{stage.get('stride')}"


def _architecture_figure(trial: FrozenTrial):
    """The student's stages left to right: box height = channels, width = layers."""
    arch = trial.user_attrs.get("arch") or {}
    stages = arch.get("stages") if isinstance(arch.get("stages"), list) else []
    figure, axes = plt.subplots(figsize=(max(4.0, 1.35 * (len(stages) + 2)), 2.8))
    widest = max([s.get("channels", 1) for s in stages] + [1])
    x = 0.0
    boxes = [("stem", f"stem\n{arch.get('stem', arch.get('stem_channels', ''))}", 0.6, 0.35)]
    for stage in stages:
        depth = stage.get("layers", stage.get("depth", 1))
        height = 0.25 + 0.75 * stage.get("channels", 1) / widest
        boxes.append(("stage", _stage_label(stage), 0.55 + 0.25 * depth, height))
    if "head" in arch:
        boxes.append(("head", f"head\n{arch['head']}", 0.6, 0.35))
    palette = {"stem": "#cccccc", "stage": "#9ecae1", "head": "#cccccc"}
    for kind, text, width, height in boxes:
        axes.add_patch(
            Rectangle((x, -height / 2), width, height, facecolor=palette[kind], edgecolor="k")
        )
        axes.text(x + width / 2, 0, text, ha="center", va="center", fontsize=7)
        x += width + 0.15
    axes.set_xlim(-0.1, x)
    axes.set_ylim(-0.6, 0.6)
    axes.axis("off")
    acc = trial.values[0]
    name = hand_designed_name(trial)
    axes.set_title(
        f"trial {trial.number}{f' ({name}, hand-designed)' if name else ''}: accuracy "
        f"{acc:.4f}, {trial.values[1] / 1e6:.2f}M MACs, {arch.get('space', '?')} space",
        fontsize=9,
    )
    return figure


# --- the page -----------------------------------------------------------------------
def _architecture_cell(trial: FrozenTrial) -> str:
    text = f"<code>{html.escape(summarize(trial.user_attrs.get('arch') or {}))}</code>"
    name = hand_designed_name(trial)
    return f"{html.escape(name)} (hand-designed): {text}" if name else text


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "millions":
        return f"{value / 1e6:.2f} M"
    if kind == "thousands":
        return f"{value / 1e3:.1f} k"
    if kind == "ms":
        return f"{value:.3f}"
    return html.escape(str(value))


def _html(
    study: optuna.Study,
    trials: list[FrozenTrial],
    front: list[FrozenTrial],
    students: list[FrozenTrial],
    pick_lines: list[str],
    images: dict[str, str],
) -> str:
    info = study.user_attrs
    states = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    trained = [t for t in trials if is_trained(t)]
    budget = info.get("budget") or {}
    budget_text = ", ".join(
        f"{name} &le; {_fmt(v, 'millions' if name != 'latency_ms' else 'ms')}"
        for name, v in budget.items()
        if v is not None
    )
    facts = [
        ("study", html.escape(study.study_name)),
        ("dataset", _fmt(info.get("dataset"), "")),
        ("space", _fmt(info.get("space"), "")),
        ("budget", budget_text or "none"),
        ("teacher val accuracy (last epoch)", _fmt(info.get("teacher_val_accuracy"), "acc")),
        ("trained candidates", str(len(trained))),
        (
            "rejected over budget (not trained)",
            str(states[TrialState.COMPLETE] - len(trained)),
        ),
        ("failed / running", f"{states[TrialState.FAIL]} / {states[TrialState.RUNNING]}"),
    ]
    on_front = {t.number for t in front}
    # an int8 meter times the fp32 model too: both latencies side by side
    fp32_too = any("latency_fp32_ms" in t.user_attrs for t in trained)
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{cell}</td>"
            for cell in (
                t.number,
                "yes" if t.number in on_front else "",
                _fmt(t.values[0], "acc"),
                _fmt(t.user_attrs.get("best_accuracy"), "acc"),
                _fmt(t.values[1], "millions"),
                _fmt(t.user_attrs.get("params"), "thousands"),
                _fmt(t.values[2], "ms"),
                *([_fmt(t.user_attrs.get("latency_fp32_ms"), "ms")] if fp32_too else []),
                _fmt(t.user_attrs.get("seed"), ""),
                _architecture_cell(t),
            )
        )
        + "</tr>"
        for t in sorted(trained, key=lambda t: (t.number not in on_front, -t.values[0]))
        if is_feasible(t)
    )

    def img(name: str, alt: str) -> str:
        return f'<img src="data:image/png;base64,{images[name]}" alt="{html.escape(alt)}">'

    students_html = "\n".join(
        img(f"student_{t.number}.png", f"architecture of trial {t.number}") for t in students
    )
    pick_html = "".join(f"<p>{html.escape(line)}</p>" for line in pick_lines)
    facts_html = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    latency_head = (
        "<th>int8 latency ms</th><th>fp32 latency ms</th>" if fp32_too else "<th>latency ms</th>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>searchkd report: {html.escape(study.study_name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
img {{ max-width: 100%; margin: 0.5em 0; }}
.figures img {{ max-width: 49%; }}
</style></head><body>
<h1>searchkd report: {html.escape(study.study_name)}</h1>
<table>{facts_html}</table>
<p>Accuracy is the <b>last-epoch</b> validation accuracy of the short proxy training (a
ranking signal, not the accuracy of a fully trained student); the best epoch is in the
table. The Pareto front is over accuracy, MACs and latency together, so a front member
can look dominated in one two-dimensional view.</p>
<h2>Pareto fronts</h2>
<div class="figures">{img("pareto_macs.png", "accuracy vs MACs")}
{img("pareto_latency.png", "accuracy vs latency")}</div>
<h2>Search progress</h2>
{img("progress.png", "best feasible accuracy vs trials")}
<h2>Top students</h2>
{pick_html}
{students_html}
<h2>Trained students within budget</h2>
<table><tr><th>trial</th><th>front</th><th>accuracy (last epoch)</th><th>best epoch</th>
<th>MACs</th><th>params</th>{latency_head}<th>seed</th><th>architecture</th></tr>
{rows}
</table>
</body></html>
"""
