"""`diffaccel report`: a static HTML page of what the lake says, for people.

    diffaccel report --lake lake --out out/report [--budget 0.02 --metric ssim]

writes ``index.html`` (CSS inline, no network resources) with its PNG charts beside it:
per config the Pareto scatter of speedup against quality loss with the budget and the
bounds marked; a table of the maximum speedup within budget per model, scheduler and
steps, one column per method combination; each method's bound across steps and
schedulers; how many trials were stopped, pruned or failed; the devices and library
versions the numbers come from; and a warning when quality was measured on
random-weight presets (``arch``/``tiny``), which test the plumbing only.

Every number comes from `codegen.lake` (the same bounds and fronts as `diffaccel query`).
Charts need matplotlib (the ``report`` extra); it is imported when a report is built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd
import typer

from codegen.lake import (
    DEFAULT_BUDGET,
    DEFAULT_METRIC,
    LakeDB,
    LakeError,
    LakeWarning,
    check_budget,
    check_metric,
    open_lake,
)
from sweep.atomic import write_atomic
from sweep.catalog import COMBOS, FAMILIES, METHOD_DISPLAY, SCHEDULERS
from sweep.exits import fail
from sweep.lake_schema import FAILED, OK, STATUSES

# A config is one bound group less the method: the methods compete inside it.
CONFIG = ("device_kind", "model", "scheduler", "steps", "resolution")
MAX_SCATTERS = 24
RANDOM_PRESETS = ("arch", "tiny")
METRIC_LABEL = {"ssim": "1 − SSIM vs. baseline", "clip": "relative CLIP-score drop vs. baseline",
                "judge": "relative judge-score drop vs. baseline"}
# One colour per combination, the same in every chart (matplotlib's tab10).
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def method_label(combo: str) -> str:
    return " + ".join(METHOD_DISPLAY.get(m, m) for m in str(combo).split("+"))


def method_color_order(combo: str) -> int:
    order = list(COMBOS)
    return order.index(combo) if combo in order else len(order) + sum(map(ord, str(combo)))


def method_color(combo: str) -> str:
    return PALETTE[method_color_order(combo) % len(PALETTE)]


def model_label(model: str) -> str:
    fam = FAMILIES.get(model)
    return fam.display if fam else str(model)


def scheduler_label(name: str) -> str:
    s = SCHEDULERS.get(name)
    return s.display if s else str(name)


def _na(value) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value))


def config_title(row) -> str:
    dev = "unknown GPU" if _na(row["device_kind"]) else row["device_kind"]
    res = "" if _na(row["resolution"]) else f", {int(row['resolution'])} px"
    return (f"{model_label(row['model'])} · {scheduler_label(row['scheduler'])}, "
            f"{int(row['steps'])} steps{res} · {dev}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:80] or "x"


# ------------------------------------------------------------------------- charts

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
                         "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 9,
                         "legend.frameon": False, "savefig.dpi": 110})
    return plt


def _wrap(title: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(title, width)) or title


def _legend_below(fig, handles: dict, width_in: float) -> None:
    """The legend under the axes, never over data; as many columns as fit the width."""
    if not handles:
        return
    longest = max(len(label) for label in handles)
    ncol = max(1, min(len(handles), int(width_in * 72 / (9 * 0.62 * longest + 30))))
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=ncol)


def pareto_figure(title: str, points: pd.DataFrame, front: pd.DataFrame, bounds: pd.DataFrame,
                  budgets: list[float], metric: str):
    """Speedup against loss for one config: every ok point, each method's front, and each
    method's best point within the first budget (a star in the method's colour)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    plt = _plt()
    width = 6.4
    fig, ax = plt.subplots(figsize=(width, 4.8), layout="constrained")
    handles = {}
    for combo, pts in sorted(points.groupby("method"), key=lambda kv: method_color_order(kv[0])):
        color = method_color(combo)
        ax.scatter(pts["quality_loss"], pts["speedup"], s=18, alpha=0.35, color=color, linewidths=0)
        f = front[front["method"] == combo].sort_values("quality_loss")
        (line,) = ax.plot(f["quality_loss"], f["speedup"], "-o", color=color, markersize=4, linewidth=1.6)
        handles[method_label(combo)] = line
    # Stars largest first, so stars that coincide (near (0, 1), say) stay visible as rings.
    stars = bounds.assign(_o=bounds["method"].map(method_color_order)).sort_values("_o")
    for i, (_, b) in enumerate(stars.iterrows()):
        ax.scatter([b["quality_loss"]], [b["speedup"]], marker="*", s=max(340 - 70 * i, 90),
                   color=method_color(b["method"]), edgecolors="black", linewidths=0.9, zorder=5 + i)
    if not stars.empty:
        handles[f"best within {budgets[0]:g}"] = ax.scatter([], [], marker="*", s=160, color="white",
                                                             edgecolors="black", linewidths=0.9)
    # The x axis spans the data, not the budget: a budget far right of every point would
    # squeeze them against the left edge. Budgets beyond the data are named at the edge.
    losses = points["quality_loss"]
    top = float(losses.max()) if len(losses) else max(budgets)
    right = top * 1.12 if top > 0 else max(budgets)
    ax.set_xlim(left=min(0.0, float(losses.min()) if len(losses) else 0.0) - right * 0.03, right=right)
    # Each budget's label runs up its own line, so close budgets do not print over each
    # other; budgets right of every point go into the legend, which covers no data.
    beyond = []
    for budget in budgets:
        if budget <= right:
            ax.axvline(budget, color="#b00020", linestyle="--", linewidth=1.3)
            ax.annotate(f"budget {budget:g}", xy=(budget, 1), xycoords=("data", "axes fraction"),
                        xytext=(-3, -4), textcoords="offset points", rotation=90, ha="right", va="top",
                        color="#b00020", fontsize=9)
        else:
            beyond.append(f"{budget:g}")
    if beyond:
        (mark,) = ax.plot([], [], color="#b00020", linestyle="--", linewidth=1.3)
        handles[f"budget {', '.join(beyond)} → (beyond every point)"] = mark
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.axhline(1.0, color="#555", linewidth=0.8)
    ax.set_xlabel(f"quality loss ({METRIC_LABEL[metric]})")
    ax.set_ylabel("speedup over baseline (×)")
    ax.set_title(_wrap(title, 60))
    _legend_below(fig, handles, width)
    return fig


def steps_figure(title: str, bounds: pd.DataFrame):
    """Each method's bound across steps, one panel per scheduler."""
    plt = _plt()
    schedulers = sorted(bounds["scheduler"].dropna().unique())
    n = max(len(schedulers), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    # A single panel still gets the width its title and legend need.
    width = max(3.8 * cols, 7.2)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 3.0 * rows + 1.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, sched in zip(axes.flat, schedulers, strict=False):
        sub = bounds[bounds["scheduler"] == sched]
        for combo, pts in sorted(sub.groupby("method"), key=lambda kv: method_color_order(kv[0])):
            pts = pts.sort_values("steps")
            ax.plot(pts["steps"], pts["speedup"], "-o", color=method_color(combo), label=method_label(combo))
        ax.axhline(1.0, color="#555", linewidth=0.8)
        ax.set_title(scheduler_label(sched))
        ax.set_xlabel("sampling steps")
        ax.set_xticks(sorted(sub["steps"].unique()))
    for ax in axes[:, 0]:
        ax.set_ylabel("max speedup (×)")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.suptitle(_wrap(title, int(width * 9)), fontsize=13)
    _legend_below(fig, legend, width)
    return fig


def save_figure(fig, path: Path) -> tuple[int, int]:
    """Save a chart as PNG; returns its size in pixels, which the page shows it at (at most)."""
    plt = _plt()
    fig.savefig(path)
    plt.close(fig)
    return png_size(path)


def png_size(path: Path) -> tuple[int, int]:
    head = Path(path).read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# ------------------------------------------------------------------------- tables

@dataclass
class Cell:
    text: str
    note: str = ""
    best: bool = False
    slow: bool = False  # below 1×: the "acceleration" makes it slower


TABLE_KEYS = ["device_kind", "model", "preset", "scheduler", "steps", "resolution"]


def is_random(preset) -> bool:
    return not _na(preset) and str(preset) in RANDOM_PRESETS


def bounds_table(bounds: pd.DataFrame) -> tuple[list[str], list[tuple[list[str], bool, list[Cell]]]]:
    """Rows (device, model, preset, scheduler, steps, resolution) x one column per method
    combination; each row also says whether its preset has random weights."""
    combos = [c for c in COMBOS if c in set(bounds["method"])] + sorted(set(bounds["method"]) - set(COMBOS))
    rows = []
    for key, grp in bounds.groupby(TABLE_KEYS, dropna=False, sort=True):
        best = grp["speedup"].max()
        cells = []
        for combo in combos:
            hit = grp[grp["method"] == combo]
            if hit.empty:
                cells.append(Cell("—"))
                continue
            r = hit.sort_values("speedup", ascending=False).iloc[0]
            slow = r["speedup"] < 1
            cells.append(Cell(f"{r['speedup']:.2f}×" + (" slower" if slow else ""),
                              f"loss {r['quality_loss']:.4f} · {r['tag']}",
                              best=r["speedup"] == best and not slow, slow=slow))
        dev, model, preset, sched, steps, res = key
        rows.append(([("—" if _na(dev) else str(dev)), model_label(model), scheduler_label(sched),
                      str(int(steps)), "—" if _na(res) else f"{int(res)} px"], is_random(preset), cells))
    return [method_label(c) for c in combos], rows


def _when(ts) -> str:
    return "—" if _na(ts) else pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")


def sweeps_table(sweeps: pd.DataFrame, trials: pd.DataFrame) -> list[dict]:
    """One entry per sweep run that left trials: the spec's name, when it ran, its budgets
    and what became of its trials. Runs from before sweeps were recorded show their id."""
    records = {r["sweep_id"]: r for _, r in sweeps.iterrows()}
    out = []
    for sid, grp in trials.assign(sweep_id=trials["sweep_id"].fillna("—")).groupby("sweep_id", sort=False):
        rec = records.get(sid)
        started = rec["started_at"] if rec is not None and not _na(rec["started_at"]) else grp["started_at"].min()
        budgets = json.loads(rec["budgets_json"]) if rec is not None and not _na(rec["budgets_json"]) else []
        name = rec["spec_name"] if rec is not None and not _na(rec["spec_name"]) else "(unrecorded spec)"
        counts = grp["status"].value_counts()
        out.append({"id": sid, "name": name, "label": f"{name} · {_when(started)}", "started": _when(started),
                    "finished": _when(grp["finished_at"].max()), "sort": started,
                    "budgets": ", ".join(f"{b:g}" for b in budgets) or "—",
                    "metric": rec["metric"] if rec is not None and not _na(rec["metric"]) else "—",
                    "counts": [int(counts.get(s, 0)) for s in STATUSES], "total": len(grp)})
    out.sort(key=lambda r: (_na(r["sort"]), r["sort"] if not _na(r["sort"]) else 0, r["id"]))
    return out


def status_table(trials: pd.DataFrame, labels: dict[str, str]) -> list[list]:
    """Per sweep run and method, how many trials ended in each status."""
    rows = []
    t = trials.assign(sweep_id=trials["sweep_id"].fillna("—"))
    for (sid, method), grp in t.groupby(["sweep_id", "method"], sort=True):
        counts = grp["status"].value_counts()
        rows.append([labels.get(sid, sid), method_label(method), *[int(counts.get(s, 0)) for s in STATUSES],
                     len(grp)])
    return rows


def failure_table(trials: pd.DataFrame, labels: dict[str, str]) -> list[dict]:
    """Failed trials grouped by their error's first line, most frequent first."""
    failed = trials[trials["status"] == FAILED]
    if failed.empty:
        return []
    reason = failed["error"].fillna("no error recorded").astype(str).map(
        lambda e: (e.strip().splitlines() or ["no error recorded"])[0][:300])
    out = []
    for (why, sid, method), grp in failed.assign(_why=reason, sweep_id=failed["sweep_id"].fillna("—")).groupby(
            ["_why", "sweep_id", "method"], sort=False):
        out.append({"reason": why, "sweep": labels.get(sid, sid), "method": method_label(method),
                    "n": len(grp), "tags": ", ".join(sorted(grp["tag"].dropna().astype(str))[:4])})
    return sorted(out, key=lambda r: (-r["n"], r["reason"]))


def versions_table(trials: pd.DataFrame, baselines: pd.DataFrame) -> list[dict]:
    cols = ["device", "device_kind", "host_cpu", "versions_json", "torch_version", "diffusers_version"]
    frames = [f[cols].assign(_src=src) for f, src in ((trials, "trials"), (baselines, "baselines")) if not f.empty]
    if not frames:
        return []
    both = pd.concat(frames, ignore_index=True)
    out = []
    for key, grp in both.groupby(cols, dropna=False):
        rec = dict(zip(cols, key, strict=True))
        libs = {}
        if not _na(rec["versions_json"]):
            try:
                libs = json.loads(rec["versions_json"])
            except ValueError:
                libs = {"versions_json": rec["versions_json"]}
        for lib in ("torch", "diffusers"):
            if lib not in libs and not _na(rec[f"{lib}_version"]):
                libs[lib] = rec[f"{lib}_version"]
        out.append({"device": "—" if _na(rec["device"]) else rec["device"],
                    "device_kind": "—" if _na(rec["device_kind"]) else rec["device_kind"],
                    "host_cpu": "—" if _na(rec["host_cpu"]) else rec["host_cpu"],
                    "libs": ", ".join(f"{k} {v}" for k, v in sorted(libs.items())) or "—",
                    "trials": int((grp["_src"] == "trials").sum()),
                    "baselines": int((grp["_src"] == "baselines").sum())})
    return out


def report_budgets(sweeps: pd.DataFrame, trials: pd.DataFrame, budgets: list[float] | None,
                   metric: str | None) -> tuple[list[float], str]:
    """The budgets and metric to show: those given, else those of the specs whose sweeps
    left these trials, else the defaults."""
    used = sweeps[sweeps["sweep_id"].isin(set(trials["sweep_id"].dropna()))] if not sweeps.empty else sweeps
    if not budgets:
        found = {float(b) for j in used["budgets_json"].dropna() for b in json.loads(j)}
        budgets = sorted(found) or [DEFAULT_BUDGET]
    if metric is None:
        metrics = set(used["metric"].dropna())
        metric = metrics.pop() if len(metrics) == 1 else DEFAULT_METRIC
    return [check_budget(b) for b in budgets], check_metric(metric)


# --------------------------------------------------------------------------- page

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>diffaccel report: {{ lake_name }}</title>
<style>
  body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
         background: #f6f7fb; margin: 0; }
  main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; box-sizing: border-box; }
  h1 { font-size: 26px; margin: 8px 0 4px; }
  h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 2px solid #dfe3ec; padding-bottom: 4px; }
  h3 { font-size: 16px; margin: 20px 0 6px; }
  .sub { color: #5b6475; margin: 0 0 18px; }
  .cards { display: flex; flex-wrap: wrap; gap: 12px; }
  .card { background: #fff; border: 1px solid #dfe3ec; border-radius: 8px; padding: 10px 16px; min-width: 150px;
          max-width: 100%; box-sizing: border-box; }
  .card b { display: block; font-size: 22px; }
  .card span { color: #5b6475; font-size: 13px; }
  .warn { background: #fff4e5; border: 1px solid #f0b35b; border-left: 6px solid #e08a00;
          border-radius: 6px; padding: 12px 16px; margin: 16px 0; }
  table { border-collapse: collapse; background: #fff; border: 1px solid #dfe3ec; margin: 8px 0; }
  /* The bounds table fits the column: fixed layout wraps long headers and notes. */
  table.fit { width: 100%; table-layout: fixed; }
  th, td { padding: 6px 8px; border-bottom: 1px solid #eceff5; text-align: left; vertical-align: top;
           overflow-wrap: break-word; }
  th { background: #eef1f7; font-weight: 600; font-size: 13px; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.best { background: #e7f6ea; font-weight: 700; }
  td.slow { background: #fdecec; color: #9b1c1c; }
  td small { display: block; color: #6b7385; font-weight: 400; font-size: 12px; }
  .tag { display: inline-block; font-size: 11px; padding: 0 5px; border-radius: 3px; background: #fff4e5;
         border: 1px solid #f0b35b; color: #8a5300; white-space: nowrap; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(520px, 100%), 1fr)); gap: 16px; }
  figure { background: #fff; border: 1px solid #dfe3ec; border-radius: 8px; margin: 0; padding: 8px;
           min-width: 0; }
  /* Never wider than the picture's own pixels (no blurry upscaling), never wider than its box. */
  figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
  figcaption { color: #5b6475; font-size: 13px; padding: 4px 6px 0; }
  .muted { color: #6b7385; }
  code { background: #eef1f7; padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
  details { margin: 8px 0; }
</style>
</head>
<body data-images="pending">
<main>
<h1>How far does training-free acceleration go?</h1>
<p class="sub">Lake <code>{{ lake_name }}</code> · quality loss in {{ metric_label }} · budgets {{ budgets_text }}
 · <span id="n-trials" data-n="{{ n_trials }}">{{ n_trials }} trials</span> · made {{ made }}</p>

{% if n_random %}
<div class="warn"><b>Rows marked <span class="tag">random weights</span> are a plumbing check, not a result.</b>
{{ n_random }} of {{ n_trials }} trials ran on random-weight presets ({{ random_presets }}). Their images are
noise, so their quality losses and the bounds drawn from them say nothing about real models; they test that
the pipeline runs end to end. Rows of trained models are not affected.</div>
{% endif %}

<div class="cards">
  <div class="card"><b>{{ n_trials }}</b><span>trials (one per key), {{ n_ok }} measured to the end</span></div>
  <div class="card"><b>{{ best_speedup }}</b><span>best speedup within {{ primary }}{% if best_where %}<br>{{ best_where }}{% endif %}</span></div>
  <div class="card" id="unbounded" data-n="{{ unbounded|length }}" data-of="{{ n_groups }}" data-budget="{{ primary }}">
    <b>{{ unbounded|length }} of {{ n_groups }}</b><span>configs (GPU, model, scheduler, steps, resolution,
    method) have no ok point within {{ primary }}</span></div>
</div>
{% if unbounded %}
<details><summary>Configs with no ok point within {{ primary }}</summary>
<ul>{% for u in unbounded %}<li>{{ u }}</li>{% endfor %}</ul></details>
{% endif %}

<h2>Maximum speedup within budget</h2>
<p class="muted">Per GPU, model, scheduler, steps and resolution, the fastest measured point whose loss is within
the budget, one column per method combination; the best of each row is green, and a red cell is slower than the
baseline (below 1×). Below each speedup: its loss and parameter tag. Budgets: {{ budgets_text }}.</p>
{% for t in tables %}
<h3 id="budget-{{ loop.index }}">Budget {{ t.budget }}</h3>
{% if t.rows %}
<table class="fit">
  <colgroup><col style="width:6%"><col style="width:11%"><col style="width:9%"><col style="width:5%"><col style="width:7%">{% for c in t.cols %}<col>{% endfor %}</colgroup>
  <tr><th>GPU</th><th>model</th><th>scheduler</th><th>steps</th><th>size</th>{% for c in t.cols %}<th>{{ c }}</th>{% endfor %}</tr>
  {% for key, random, cells in t.rows %}
  <tr>{% for k in key %}<td>{{ k }}{% if loop.index0 == 1 and random %} <span class="tag">random weights</span>{% endif %}</td>{% endfor %}
    {% for cell in cells %}<td class="num{% if cell.best %} best{% endif %}{% if cell.slow %} slow{% endif %}">{{ cell.text }}{% if cell.note %}<small>{{ cell.note }}</small>{% endif %}</td>{% endfor %}</tr>
  {% endfor %}
</table>
{% else %}
<p>No trial is within the budget.</p>
{% endif %}
{% endfor %}

<h2>Speedup against quality loss, per config</h2>
<p class="muted">Every measured point (faint), each method's Pareto front (line), the budgets (dashed red) and each
method's best point within {{ primary }} (a star in its colour).{% if n_hidden %} {{ n_hidden }} more configs are
not drawn; list them with <code>diffaccel query</code>.{% endif %}</p>
<div class="grid">
{% for f in scatters %}<figure><img src="{{ f.src }}" alt="{{ f.title }}" width="{{ f.width }}" height="{{ f.height }}"><figcaption>{{ f.title }}{% if f.random %} <span class="tag">random weights</span>{% endif %}</figcaption></figure>
{% endfor %}
</div>

<h2>Each method's speedup across steps and schedulers</h2>
<p class="muted">The maximum speedup within {{ primary }} of each method combination, by number of sampling steps,
one panel per scheduler.</p>
<div class="grid">
{% for f in step_charts %}<figure><img src="{{ f.src }}" alt="{{ f.title }}" width="{{ f.width }}" height="{{ f.height }}"><figcaption>{{ f.title }}</figcaption></figure>
{% endfor %}
</div>

<h2>The sweeps</h2>
<table>
  <tr><th>spec</th><th>started</th><th>last trial</th><th>budgets</th>{% for s in statuses %}<th>{{ s }}</th>{% endfor %}<th>total</th></tr>
  {% for r in sweeps %}<tr><td>{{ r.name }}<small class="muted">{{ r.id }}</small></td><td>{{ r.started }}</td><td>{{ r.finished }}</td><td>{{ r.budgets }}</td>{% for n in r.counts %}<td class="num">{{ n }}</td>{% endfor %}<td class="num">{{ r.total }}</td></tr>
  {% endfor %}
</table>

<h2>What the sweeps did</h2>
<p class="muted"><b>ok</b>: measured to the end · <b>stopped</b>: ended early, loss clearly over every budget ·
<b>pruned</b>: never run, dominated by a point already over budget · <b>failed</b>: raised an error (reasons below).</p>
<table>
  <tr><th>sweep</th><th>method</th>{% for s in statuses %}<th>{{ s }}</th>{% endfor %}<th>total</th></tr>
  {% for row in status_rows %}<tr>{% for v in row %}<td{% if not loop.index0 < 2 %} class="num"{% endif %}>{{ v }}</td>{% endfor %}</tr>
  {% endfor %}
</table>
{% if failures %}
<h3>Why trials failed</h3>
<table>
  <tr><th>reason</th><th>sweep</th><th>method</th><th>trials</th><th>tags</th></tr>
  {% for f in failures %}<tr><td><code>{{ f.reason }}</code></td><td>{{ f.sweep }}</td><td>{{ f.method }}</td><td class="num">{{ f.n }}</td><td>{{ f.tags }}</td></tr>
  {% endfor %}
</table>
{% endif %}

<h2>Where the numbers come from</h2>
<table>
  <tr><th>device</th><th>kind</th><th>host CPU</th><th>libraries</th><th>trials</th><th>baselines</th></tr>
  {% for v in versions %}<tr><td>{{ v.device }}</td><td>{{ v.device_kind }}</td><td>{{ v.host_cpu }}</td><td>{{ v.libs }}</td><td class="num">{{ v.trials }}</td><td class="num">{{ v.baselines }}</td></tr>
  {% endfor %}
</table>
</main>
<script>
  // Marks the page once every image has loaded (or not), for a headless check.
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
    document.body.setAttribute("data-images", bad.length ? "missing:" + bad.length : "ok");
    document.body.setAttribute("data-image-count", String(imgs.length));
  });
</script>
</body>
</html>
"""


def _group_label(row) -> str:
    return f"{config_title(row)} · {method_label(row['method'])}"


def build_report(lake: str | LakeDB, out: str | Path, budgets: list[float] | float | None = None,
                 metric: str | None = None, progress=None) -> Path:
    """Write index.html and its PNGs into `out`; returns the page's path.

    `budgets`: the quality budgets to show (one table each; the charts' stars use the
    first); by default those of the specs whose sweeps wrote the trials."""
    if isinstance(budgets, int | float):
        budgets = [budgets]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LakeError(f"--out {str(out)!r} is a file: pass a folder for index.html and its images")
    if metric is not None:
        check_metric(metric)
    for b in budgets or ():
        check_budget(b)
    lk = lake if isinstance(lake, LakeDB) else open_lake(str(lake))
    say = progress or (lambda _msg: None)
    trials, baselines, sweeps = lk.trials(), lk.baselines(), lk.sweeps()
    budgets, metric = report_budgets(sweeps, trials, budgets, metric)
    primary = budgets[0]
    out.mkdir(parents=True, exist_ok=True)
    bounds, front = lk.bounds(budget=primary, metric=metric), lk.pareto(metric=metric)
    loss_col = f"quality_loss_{metric}"
    ok = trials[(trials["status"] == OK) & trials["speedup"].notna() & trials[loss_col].notna()]
    ok = ok.assign(quality_loss=ok[loss_col])

    # Pareto scatters, one per config, in reading order.
    configs = (ok.groupby(list(CONFIG), dropna=False).size().rename("n").reset_index()
               .sort_values(list(CONFIG)))
    scatters = []
    for i, (_, cfg) in enumerate(configs.head(MAX_SCATTERS).iterrows()):
        def pick(df, cfg=cfg):
            mask = pd.Series(True, index=df.index)
            for c in CONFIG:
                mask &= df[c].isna() if _na(cfg[c]) else df[c] == cfg[c]
            return df[mask]
        title = config_title(cfg)
        name = f"pareto-{i:02d}-{_slug(title)}.png"
        pts = pick(ok)
        w, h = save_figure(pareto_figure(title, pts, pick(front), pick(bounds), budgets, metric), out / name)
        scatters.append({"src": name, "title": title, "width": w, "height": h,
                         "random": bool(pts["preset"].map(is_random).any())})
        say(f"chart {i + 1}/{min(len(configs), MAX_SCATTERS)}: {title}")

    step_charts = []
    for (dev, model), grp in bounds.groupby(["device_kind", "model"], dropna=False, sort=True):
        title = f"{model_label(model)} on {'unknown GPU' if _na(dev) else dev}: max speedup within {primary:g}"
        name = f"steps-{_slug(f'{model}-{dev}')}.png"
        w, h = save_figure(steps_figure(title, grp), out / name)
        step_charts.append({"src": name, "title": title, "width": w, "height": h})

    tables = []
    for b in budgets:
        cols, rows = bounds_table(bounds if b == primary else lk.bounds(budget=b, metric=metric))
        tables.append({"budget": f"{b:g}", "cols": cols, "rows": rows})
    sweep_rows = sweeps_table(sweeps, trials) if not trials.empty else []
    labels = {r["id"]: r["label"] for r in sweep_rows}
    random_rows = trials["preset"].map(is_random) if not trials.empty else pd.Series(dtype=bool)
    # Counted as `diffaccel bounds` counts: configs are BOUND_GROUP over every stored trial.
    unbounded = lk.unbounded(primary, metric)
    n_groups = len(lk.sql("SELECT DISTINCT device_kind, model, scheduler, steps, resolution, method FROM trials"))
    best = bounds.sort_values("speedup", ascending=False).head(1)
    best_text = "—"
    if not best.empty:
        su = best["speedup"].iloc[0]
        best_text = f"{su:.2f}×" + (" (a slowdown)" if su < 1 else "")

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        lake_name=lk.uri, metric_label=METRIC_LABEL[metric], primary=f"{primary:g}",
        budgets_text=", ".join(f"{b:g}" for b in budgets),
        made=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
        n_trials=len(trials), n_ok=int((trials["status"] == OK).sum()),
        best_speedup=best_text,
        best_where=(f"{method_label(best['method'].iloc[0])}, {config_title(best.iloc[0])}"
                    if not best.empty else ""),
        n_groups=n_groups, unbounded=[_group_label(r) for _, r in unbounded.iterrows()],
        n_random=int(random_rows.sum()),
        random_presets=", ".join(sorted(set(trials.loc[random_rows, "preset"]))) if len(random_rows) else "",
        tables=tables, scatters=scatters, n_hidden=max(len(configs) - MAX_SCATTERS, 0), step_charts=step_charts,
        statuses=list(STATUSES), sweeps=sweep_rows,
        status_rows=status_table(trials, labels) if not trials.empty else [],
        failures=failure_table(trials, labels),
        versions=versions_table(trials, baselines),
    )
    return write_atomic(out / "index.html", html)


def report_cmd(
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow.fs URI"),
    out: Path = typer.Option(..., "--out", help="folder for index.html and its images"),
    budget: list[float] = typer.Option(None, "--budget", help="a quality budget to show (repeat for more); "
                                       "default: the budgets of the sweeps' specs, else 0.02"),
    metric: str = typer.Option(None, help="quality metric of the budgets: ssim, clip or judge (default: the specs')"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="say which chart is being drawn"),
) -> None:
    """Write an HTML report of the lake: Pareto charts, bounds per method, sweep outcome, versions."""
    import warnings

    def say(msg: str) -> None:
        typer.echo(f"[report] {msg}", err=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LakeWarning)
        try:
            page = build_report(lake, out, budgets=budget or None, metric=metric,
                                progress=say if verbose else None)
        except LakeError as err:
            raise fail(str(err)) from None
        except ModuleNotFoundError as err:
            if err.name != "matplotlib":
                raise
            raise fail("the report draws with matplotlib: pip install 'diffaccel[report]'") from None
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    typer.echo(str(page))


__all__ = ["build_report", "report_cmd"]
