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

from codegen.lake import DEFAULT_BUDGET, DEFAULT_METRIC, Lake, check_budget, check_metric, open_lake
from sweep.catalog import COMBOS, FAMILIES, METHOD_DISPLAY, SCHEDULERS
from sweep.lake_schema import OK, STATUSES

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


def pareto_chart(path: Path, title: str, points: pd.DataFrame, front: pd.DataFrame, bounds: pd.DataFrame,
                 budget: float, metric: str) -> None:
    """Speedup against loss for one config: every ok point, each method's front, the bounds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for combo, pts in sorted(points.groupby("method"), key=lambda kv: method_color_order(kv[0])):
        color = method_color(combo)
        ax.scatter(pts["quality_loss"], pts["speedup"], s=18, alpha=0.35, color=color, linewidths=0)
        f = front[front["method"] == combo].sort_values("quality_loss")
        ax.plot(f["quality_loss"], f["speedup"], "-o", color=color, markersize=4, linewidth=1.6,
                label=method_label(combo))
    if not bounds.empty:
        ax.scatter(bounds["quality_loss"], bounds["speedup"], marker="*", s=260, color="gold",
                   edgecolors="black", linewidths=0.9, zorder=5, label="best within budget")
    ax.axvline(budget, color="#b00020", linestyle="--", linewidth=1.3)
    ax.annotate(f"budget {budget:g}", xy=(budget, 1), xycoords=("data", "axes fraction"), xytext=(4, -14),
                textcoords="offset points", color="#b00020", fontsize=9)
    ax.axhline(1.0, color="#555", linewidth=0.8)
    ax.set_xlabel(f"quality loss ({METRIC_LABEL[metric]})")
    ax.set_ylabel("speedup over baseline (×)")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def steps_chart(path: Path, title: str, bounds: pd.DataFrame) -> None:
    """Each method's bound across steps, one panel per scheduler."""
    plt = _plt()
    schedulers = sorted(bounds["scheduler"].dropna().unique())
    n = max(len(schedulers), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows + 0.8), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, sched in zip(axes.flat, schedulers, strict=False):
        sub = bounds[bounds["scheduler"] == sched]
        for combo, pts in sorted(sub.groupby("method"), key=lambda kv: method_color_order(kv[0])):
            pts = pts.sort_values("steps")
            ax.plot(pts["steps"], pts["speedup"], "-o", color=method_color(combo), label=method_label(combo))
        ax.set_title(scheduler_label(sched))
        ax.set_xlabel("sampling steps")
        ax.set_xticks(sorted(sub["steps"].unique()))
    for ax in axes[:, 0]:
        ax.set_ylabel("max speedup within budget (×)")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.suptitle(title, fontsize=13)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(len(legend), 4))
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------- tables

@dataclass
class Cell:
    text: str
    note: str = ""
    best: bool = False


def bounds_table(bounds: pd.DataFrame) -> tuple[list[str], list[tuple[list[str], list[Cell]]]]:
    """Rows (device, model, scheduler, steps) x one column per method combination."""
    combos = [c for c in COMBOS if c in set(bounds["method"])] + sorted(set(bounds["method"]) - set(COMBOS))
    rows = []
    keys = ["device_kind", "model", "scheduler", "steps"]
    for key, grp in bounds.groupby(keys, dropna=False, sort=True):
        best = grp["speedup"].max()
        cells = []
        for combo in combos:
            hit = grp[grp["method"] == combo]
            if hit.empty:
                cells.append(Cell("—"))
                continue
            r = hit.sort_values("speedup", ascending=False).iloc[0]
            cells.append(Cell(f"{r['speedup']:.2f}×", f"loss {r['quality_loss']:.4f} · {r['tag']}",
                              best=r["speedup"] == best))
        dev, model, sched, steps = key
        rows.append(([("—" if _na(dev) else str(dev)), model_label(model), scheduler_label(sched),
                      str(int(steps))], cells))
    return [method_label(c) for c in combos], rows


def status_table(trials: pd.DataFrame) -> pd.DataFrame:
    counts = (trials.assign(sweep_id=trials["sweep_id"].fillna("—"))
              .pivot_table(index=["sweep_id", "method"], columns="status", values="trial_key",
                           aggfunc="count", fill_value=0))
    for s in STATUSES:
        if s not in counts.columns:
            counts[s] = 0
    counts = counts[list(STATUSES) + [c for c in counts.columns if c not in STATUSES]]
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index()


def versions_table(trials: pd.DataFrame, baselines: pd.DataFrame) -> list[dict]:
    frames = [f for f in (trials, baselines) if not f.empty]
    if not frames:
        return []
    cols = ["device", "device_kind", "host_cpu", "versions_json", "torch_version", "diffusers_version"]
    both = pd.concat([f[cols] for f in frames], ignore_index=True)
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
                    "rows": len(grp)})
    return out


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
  main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
  h1 { font-size: 26px; margin: 8px 0 4px; }
  h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 2px solid #dfe3ec; padding-bottom: 4px; }
  .sub { color: #5b6475; margin: 0 0 18px; }
  .cards { display: flex; flex-wrap: wrap; gap: 12px; }
  .card { background: #fff; border: 1px solid #dfe3ec; border-radius: 8px; padding: 10px 16px; min-width: 150px; }
  .card b { display: block; font-size: 22px; }
  .card span { color: #5b6475; font-size: 13px; }
  .warn { background: #fff4e5; border: 1px solid #f0b35b; border-left: 6px solid #e08a00;
          border-radius: 6px; padding: 12px 16px; margin: 16px 0; }
  table { border-collapse: collapse; background: #fff; border: 1px solid #dfe3ec; margin: 8px 0; }
  th, td { padding: 6px 12px; border-bottom: 1px solid #eceff5; text-align: left; vertical-align: top; }
  th { background: #eef1f7; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.best { background: #e7f6ea; font-weight: 700; }
  td small { display: block; color: #6b7385; font-weight: 400; font-size: 12px; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
  .grid.wide { grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
  figure { background: #fff; border: 1px solid #dfe3ec; border-radius: 8px; margin: 0; padding: 8px; }
  figure img { width: 100%; height: auto; display: block; }
  figcaption { color: #5b6475; font-size: 13px; padding: 4px 6px 0; }
  .muted { color: #6b7385; }
  code { background: #eef1f7; padding: 1px 4px; border-radius: 3px; }
</style>
</head>
<body data-images="pending">
<main>
<h1>How far does training-free acceleration go?</h1>
<p class="sub">Lake <code>{{ lake_name }}</code> · budget: quality loss ≤ {{ budget }} in {{ metric_label }}
 · {{ n_trials }} trials · made {{ made }}</p>

{% if random_presets %}
<div class="warn"><b>Plumbing check, not a result.</b> Quality was measured on random-weight presets
({{ random_presets }}) for {{ random_share }} of the trials. Their images are noise, so their quality losses
and the bounds drawn from them say nothing about real models; they test that the pipeline runs end to end.</div>
{% endif %}

<div class="cards">
  <div class="card"><b>{{ n_configs }}</b><span>configs (GPU, model, scheduler, steps)</span></div>
  <div class="card"><b>{{ n_trials }}</b><span>trials, {{ n_ok }} measured to the end</span></div>
  <div class="card"><b>{{ best_speedup }}</b><span>best speedup within budget{% if best_where %}<br>{{ best_where }}{% endif %}</span></div>
  <div class="card"><b>{{ n_out }}</b><span>of {{ n_groups }} config × method pairs have no point within budget</span></div>
</div>

<h2>Maximum speedup within budget</h2>
{% if table_rows %}
<p class="muted">Per GPU, model, scheduler and steps, the fastest measured point whose loss is within the budget, one
column per method combination; the best of each row is green. Below each speedup: its loss and parameter tag.</p>
<table>
  <tr><th>GPU</th><th>model</th><th>scheduler</th><th>steps</th>{% for c in table_cols %}<th>{{ c }}</th>{% endfor %}</tr>
  {% for key, cells in table_rows %}
  <tr>{% for k in key %}<td>{{ k }}</td>{% endfor %}
    {% for cell in cells %}<td class="num{% if cell.best %} best{% endif %}">{{ cell.text }}{% if cell.note %}<small>{{ cell.note }}</small>{% endif %}</td>{% endfor %}</tr>
  {% endfor %}
</table>
{% else %}
<p>No trial is within the budget.</p>
{% endif %}

<h2>Speedup against quality loss, per config</h2>
<p class="muted">Every measured point (faint), each method's Pareto front (line), the budget (dashed red) and the
best point within it (star).{% if n_hidden %} {{ n_hidden }} more configs are not drawn; list them with
<code>diffaccel query</code>.{% endif %}</p>
<div class="grid">
{% for f in scatters %}<figure><img src="{{ f.src }}" alt="{{ f.title }}" width="704" height="484"><figcaption>{{ f.title }}</figcaption></figure>
{% endfor %}
</div>

<h2>Each method's speedup across steps and schedulers</h2>
<p class="muted">The maximum speedup within budget of each method combination, by number of sampling steps, one
panel per scheduler.</p>
<div class="grid wide">
{% for f in step_charts %}<figure><img src="{{ f.src }}" alt="{{ f.title }}"><figcaption>{{ f.title }}</figcaption></figure>
{% endfor %}
</div>

<h2>What the sweep did</h2>
<p class="muted"><b>ok</b>: measured to the end · <b>stopped</b>: ended early, loss clearly over every budget ·
<b>pruned</b>: never run, dominated by a point already over budget · <b>failed</b>: raised an error.</p>
<table>
  <tr>{% for c in status_cols %}<th>{{ c }}</th>{% endfor %}</tr>
  {% for row in status_rows %}<tr>{% for v in row %}<td{% if not loop.index0 < 2 %} class="num"{% endif %}>{{ v }}</td>{% endfor %}</tr>
  {% endfor %}
</table>

<h2>Where the numbers come from</h2>
<table>
  <tr><th>device</th><th>kind</th><th>host CPU</th><th>libraries</th><th>rows</th></tr>
  {% for v in versions %}<tr><td>{{ v.device }}</td><td>{{ v.device_kind }}</td><td>{{ v.host_cpu }}</td><td>{{ v.libs }}</td><td class="num">{{ v.rows }}</td></tr>
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


def build_report(lake: str | Lake, out: str | Path, budget: float = DEFAULT_BUDGET,
                 metric: str = DEFAULT_METRIC, progress=None) -> Path:
    """Write index.html and its PNGs into `out`; returns the page's path."""
    budget, metric = check_budget(budget), check_metric(metric)
    lk = lake if isinstance(lake, Lake) else open_lake(str(lake))
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials, baselines = lk.trials(), lk.baselines()
    bounds, front = lk.bounds(budget=budget, metric=metric), lk.pareto(metric=metric)
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
        pareto_chart(out / name, title, pick(ok), pick(front), pick(bounds), budget, metric)
        scatters.append({"src": name, "title": title})
        say(f"chart {i + 1}/{min(len(configs), MAX_SCATTERS)}: {title}")

    step_charts = []
    for (dev, model), grp in bounds.groupby(["device_kind", "model"], dropna=False, sort=True):
        title = f"{model_label(model)} on {'unknown GPU' if _na(dev) else dev}: max speedup within budget"
        name = f"steps-{_slug(f'{model}-{dev}')}.png"
        steps_chart(out / name, title, grp)
        step_charts.append({"src": name, "title": title})

    table_cols, table_rows = bounds_table(bounds)
    status = status_table(trials) if not trials.empty else pd.DataFrame(columns=["sweep_id", "method", *STATUSES])
    presets = sorted(set(trials["preset"].dropna()) & set(RANDOM_PRESETS))
    n_random = int(trials["preset"].isin(RANDOM_PRESETS).sum())
    n_groups = len(ok.groupby(list(CONFIG) + ["method"], dropna=False)) if not ok.empty else 0
    best = bounds.sort_values("speedup", ascending=False).head(1)

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        lake_name=lk.uri, budget=f"{budget:g}", metric_label=METRIC_LABEL[metric],
        made=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
        n_trials=len(trials), n_ok=int((trials["status"] == OK).sum()),
        n_configs=len(ok.groupby(list(CONFIG), dropna=False)) if not ok.empty else 0,
        best_speedup=f"{best['speedup'].iloc[0]:.2f}×" if not best.empty else "—",
        best_where=(f"{method_label(best['method'].iloc[0])}, {config_title(best.iloc[0])}"
                    if not best.empty else ""),
        n_groups=n_groups, n_out=n_groups - len(bounds),
        random_presets=", ".join(presets),
        random_share=f"{n_random / max(len(trials), 1):.0%}",
        table_cols=table_cols, table_rows=table_rows,
        scatters=scatters, n_hidden=max(len(configs) - MAX_SCATTERS, 0), step_charts=step_charts,
        status_cols=["sweep", "method", *[c for c in status.columns if c not in ("sweep_id", "method")]],
        status_rows=[[r["sweep_id"], method_label(r["method"]), *[r[c] for c in status.columns
                                                                  if c not in ("sweep_id", "method")]]
                     for _, r in status.iterrows()],
        versions=versions_table(trials, baselines),
    )
    page = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(page)
    return page


def report_cmd(
    lake: str = typer.Option(..., "--lake", help="lake folder or pyarrow.fs URI"),
    out: Path = typer.Option(..., "--out", help="folder for index.html and its images"),
    budget: float = typer.Option(DEFAULT_BUDGET, help="largest quality loss allowed"),
    metric: str = typer.Option(DEFAULT_METRIC, help="quality metric of the budget: ssim, clip or judge"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="say which chart is being drawn"),
) -> None:
    """Write an HTML report of the lake: Pareto charts, bounds per method, sweep outcome, versions."""
    import warnings

    from codegen.lake import LakeError, LakeWarning

    def say(msg: str) -> None:
        typer.echo(f"[report] {msg}", err=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LakeWarning)
        try:
            page = build_report(lake, out, budget=budget, metric=metric, progress=say if verbose else None)
        except LakeError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as err:
            if err.name != "matplotlib":
                raise
            typer.echo("error: the report draws with matplotlib: pip install 'diffaccel[report]'", err=True)
            raise typer.Exit(2) from None
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    typer.echo(str(page))


__all__ = ["build_report", "report_cmd"]
