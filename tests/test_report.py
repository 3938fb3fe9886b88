"""The HTML report: rendered from a lake through the CLI, checked against the CLI's own
numbers, its charts checked for clipping and overlap, and the page opened in headless
Chromium with a layout check the test injects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from lake_rows import baseline, demo_rows, trial
from sweep_helpers import tiny_spec
from typer.testing import CliRunner

from codegen.lake import open_lake
from codegen.report import METHOD_DISPLAY, method_color, pareto_figure, steps_figure
from diffaccel.cli import app
from sweep.catalog import COMBOS
from sweep.lake import LakeWriter

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NASTY = '<script>alert("x")</script>'
BUDGETS = [0.01, 0.03]  # the spec's, not the 0.02 default
SIX = ["deepcache", "tgate", "tome", "deepcache+tgate", "deepcache+tome", "tgate+tome"]


def one_param(combo: str, i: int) -> dict:
    p = {"deepcache": {"cache_interval": 2 + i}, "tgate": {"gate_step": 4 + i}, "tome": {"ratio": 0.3 + i / 10}}
    out: dict = {}
    for m in combo.split("+"):
        out.update(p[m])
    return out


def lake_rows() -> list[dict]:
    # Trained weights: H100, two models x two schedulers x two step counts, three combos.
    rows = [r for r in demo_rows(seed=3) if r["device_kind"] == "H100"]
    for r in rows:
        if r["status"] == "failed":
            r["error"] = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback ..."
    # Random weights (the tiny preset) on a CPU: one scheduler, every combo -> a one-panel
    # steps chart with a seven-entry legend, the widest table, and slowdowns (speedup < 1).
    for i, combo in enumerate(COMBOS):
        for j in range(3):
            rows.append(trial(combo, one_param(combo, j), model="sd21", preset="tiny", device_kind="cpu",
                              steps=20, resolution=64, speedup=0.7 + 0.05 * i + 0.1 * j,
                              loss=0.002 * (j + 1), sweep_id="tiny-run", minute=500 + i * 3 + j))
    rows[0]["sweep_id"] = NASTY  # every value the page embeds must be escaped
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    w = LakeWriter(str(lake))
    w.write_trials(lake_rows())
    w.write_baselines([baseline(device_kind="H100", steps=s) for s in (20, 50)])
    w.write_sweep(tiny_spec(name="h100-study", quality={"metric": "ssim", "budgets": BUDGETS}), "demo", "H100")
    w.write_sweep(tiny_spec(name=NASTY), "tiny-run", "cpu")
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["report", "--lake", str(lake), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return lake, out


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_report_numbers_match_the_cli(report):
    lake, out = report
    html = (out / "index.html").read_text()
    # trials: the header's count is the CLI's
    code, stdout, _ = cli("query", "--lake", str(lake), "--format", "json", "SELECT count(*) AS n FROM trials")
    n = json.loads(stdout)[0]["n"]
    assert re.search(r'id="n-trials" data-n="(\d+)"', html).group(1) == str(n)
    # configs without a point within the first budget: as `diffaccel bounds` counts them
    code, stdout, stderr = cli("bounds", "--lake", str(lake), "--budget", str(BUDGETS[0]))
    assert code == 0
    cli_out, cli_of = map(int, re.search(r"(\d+) of (\d+) config\(s\) have no ok point", stderr).groups())
    card = re.search(r'id="unbounded" data-n="(\d+)" data-of="(\d+)" data-budget="([^"]+)"', html)
    assert (int(card.group(1)), int(card.group(2)), float(card.group(3))) == (cli_out, cli_of, BUDGETS[0])
    assert html.count("<li>") == cli_out > 0
    # provenance: trial rows add up to the header's count, baselines apart
    prov = re.findall(r'<td class="num">(\d+)</td><td class="num">(\d+)</td></tr>\s*(?=<tr>|\s*</table>\s*</main>)',
                      html.split("Where the numbers come from")[1])
    assert sum(int(t) for t, _b in prov) == n and sum(int(b) for _t, b in prov) == 2
    # every bound of each budget is in its table
    for i, budget in enumerate(BUDGETS, 1):
        section = html.split(f'id="budget-{i}"')[1].split("</table>")[0]
        for su in open_lake(str(lake)).bounds(budget=budget)["speedup"]:
            assert f"{su:.2f}×" in section


def test_report_content(report):
    lake, out = report
    html = (out / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    # per config (2 models x 2 schedulers x 2 steps on H100, 1 on cpu) a Pareto chart, per GPU and model a steps chart
    assert sum(s.startswith("pareto-") for s in srcs) == 9 and sum(s.startswith("steps-") for s in srcs) == 3
    assert NASTY not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "https://" not in html and "http://" not in html  # nothing fetched from the network
    # the spec's budgets, one table each; no 0.02 default
    assert "budgets 0.01, 0.03" in html and "Budget 0.01" in html and "Budget 0.03" in html
    assert "Budget 0.02" not in html and "within 0.02" not in html and "within 0.01" in html
    # sweeps by spec name and time; failures with their reason
    assert "h100-study" in html and re.search(r"h100-study<small[^>]*>demo</small></td><td>20\d\d-\d\d-\d\d \d\d:\d\d UTC", html)
    assert "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in html and "Traceback ..." not in html
    # slowdowns are marked as such, never as a row's best
    assert re.search(r'<td class="num slow">0\.\d\d× slower', html)
    assert not re.search(r'class="num best slow"|class="num best">0\.', html)
    # the random-weights note marks the random rows only: the cpu/tiny row, not the H100 ones
    table = html.split('id="budget-1"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>(\w+)</td>.*?</tr>", table, flags=re.S)
    tagged = re.findall(r"<tr><td>(\w+)</td><td>[^<]*<span class=\"tag\">random weights", table)
    assert set(rows) == {"H100", "cpu"} and set(tagged) == {"cpu"}
    assert "21 of" in html.split('class="warn"')[1].split("</div>")[0]
    for status in ("ok", "stopped", "pruned", "failed"):
        assert f"<th>{status}</th>" in html
    assert "torch 2.13.0" in html and "NVIDIA H100" in html


def _sticks_out(fig) -> bool:
    """Whether anything drawn on `fig` (titles, labels, legends) reaches past its edges."""
    fig.canvas.draw()
    tight = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches, drawn artists only
    w, h = fig.get_size_inches()
    return tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > w + 0.01 or tight.y1 > h + 0.01


def test_one_panel_steps_chart_shows_its_whole_title_and_legend():
    import pandas as pd

    rows = [trial(c, one_param(c, 0), steps=s, speedup=1 + i / 5 + s / 100) for i, c in enumerate(SIX) for s in (20, 50)]
    bounds = pd.DataFrame(rows)
    fig = steps_figure("Stable Diffusion XL on H200: max speedup within 0.02", bounds)
    assert not _sticks_out(fig)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [" + ".join(METHOD_DISPLAY[m] for m in c.split("+"))
                                                          for c in SIX]


def test_pareto_chart_axis_ticks_stars_and_legend():
    import matplotlib.pyplot as plt
    import pandas as pd

    pts = pd.DataFrame([trial(c, one_param(c, j), speedup=1 + j / 10 + i / 100, loss=0.0004 * j)
                        for i, c in enumerate(COMBOS[:4]) for j in range(4)])
    pts["quality_loss"] = pts["quality_loss_ssim"]
    best = pts.sort_values("speedup").groupby("method").tail(1).assign(quality_loss=lambda d: d["quality_loss_ssim"])
    fig = pareto_figure("SD 1.5 · DDIM, 20 steps, 512 px · H100", pts, pts, best, [0.05], "ssim")
    ax = fig.axes[0]
    assert not _sticks_out(fig)
    # the axis spans the data, not the far budget, and says where the budget is
    assert ax.get_xlim()[1] < 0.05 / 5
    assert "budget 0.05 → (beyond every point)" in [t.get_text() for t in fig.legends[0].get_texts()]
    # tick labels do not run into each other
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    lo, hi = ax.get_xlim()
    boxes = sorted((t.get_window_extent(r) for t in ax.get_xticklabels()
                    if t.get_text() and lo <= t.get_position()[0] <= hi), key=lambda b: b.x0)
    assert len(boxes) >= 3 and all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))
    # a star per method, in the method's colour
    import matplotlib.colors as mcolors

    stars = [c for c in ax.collections if c.get_paths() and len(c.get_offsets()) == 1
             and c.get_sizes()[0] >= 90]
    colours = {mcolors.to_hex(c.get_facecolor()[0]) for c in stars}
    assert colours == {method_color(m) for m in best["method"]}
    # the legend is outside the axes: it covers no data
    assert fig.legends and not ax.get_legend()
    leg = fig.legends[0].get_window_extent(r)
    assert not leg.overlaps(ax.get_window_extent(r))
    plt.close(fig)


def test_no_plumbing_note_for_real_weights(tmp_path):
    LakeWriter(str(tmp_path / "lake")).write_trials([trial("deepcache", {"cache_interval": 3}, preset="hub")])
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert 'class="warn"' not in html and "random weights</span></td>" not in html


def test_report_bad_input_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "none"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no lake at" in result.output
    assert not (tmp_path / "r").exists()
    (tmp_path / "lake" / "trials").mkdir(parents=True)
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "r"),
                                      "--metric", "lpips"])
    assert result.exit_code == 2 and "unknown quality metric 'lpips'" in result.output
    (tmp_path / "afile").write_text("keep me")
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "afile")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: --out {str(tmp_path / 'afile')!r} is a file: pass a folder for index.html and its images"]
    assert (tmp_path / "afile").read_text() == "keep me"


def test_report_of_a_lake_with_nothing_measured(tmp_path):
    LakeWriter(str(tmp_path / "lake")).write_trials([trial("tgate", {"gate_step": 4}, status="failed"),
                                                     trial("tome", {"ratio": 0.5}, status="pruned")])
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert "No trial is within the budget." in html and "<img" not in html
    assert "Budget 0.02" in html  # no spec recorded: the default
    assert re.search(r"<td>\(unrecorded spec\) · 2025-01-01 00:00 UTC</td><td>ToMe</td><td class=\"num\">0</td>"
                     r"<td class=\"num\">0</td><td class=\"num\">1</td>", html)
    assert "<code>failed for a reason</code>" in html


# ----------------------------------------------------------------------------- browser

# Injected by the test, not shipped in the page: after load, the page's own layout is
# measured. scaled: an image shown wider than its pixels; clipped: an image sticking out
# of its figure; wide: an element past the viewport's right edge.
CHECK = """<script>
window.addEventListener("load", function () {
  var W = document.documentElement.clientWidth, scaled = [], clipped = [], wide = [];
  Array.prototype.forEach.call(document.images, function (i) {
    var r = i.getBoundingClientRect(), f = i.parentElement.getBoundingClientRect();
    if (r.width > i.naturalWidth + 0.5 || r.height > i.naturalHeight + 0.5) scaled.push(i.getAttribute("src"));
    if (r.left < f.left - 0.5 || r.right > f.right + 0.5 || r.top < f.top - 0.5 || r.bottom > f.bottom + 0.5)
      clipped.push(i.getAttribute("src"));
  });
  Array.prototype.forEach.call(document.querySelectorAll("body *"), function (e) {
    var r = e.getBoundingClientRect();
    if (r.width > 0 && (r.right > W + 0.5 || r.left < -0.5)) wide.push(e.tagName + (e.id ? "#" + e.id : ""));
  });
  if (document.documentElement.scrollWidth > W) wide.push("document");
  var out = document.createElement("pre");
  out.id = "layout-check";
  out.textContent = JSON.stringify({scaled: scaled, clipped: clipped, wide: wide, width: W});
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str, tmp) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def layout(page, tmp, extra: str = "", width: int = 1280) -> tuple[str, int, dict, str]:
    """(image state, image count, layout check, DOM) of `page` as Chromium lays it out."""
    probe = page.parent / f".probe-{width}.html"
    probe.write_text(page.read_text().replace("</body>", extra + CHECK + "</body>"))
    try:
        dom = chromium(f"--window-size={width},2000", "--virtual-time-budget=10000", "--dump-dom",
                       probe.as_uri(), tmp=tmp).stdout
    finally:
        probe.unlink()
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    state = re.search(r'data-images="([^"]*)"', body.group(0)).group(1)
    count = re.search(r'data-image-count="(\d+)"', body.group(0))
    check = re.search(r'<pre id="layout-check">(.*?)</pre>', dom, flags=re.S)
    assert check, dom[-500:]
    return state, int(count.group(1)) if count else -1, json.loads(check.group(1).replace("&quot;", '"')), dom


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_report_renders_in_a_browser_unclipped_unscaled_and_within_the_viewport(report, tmp_path):
    lake, out = report
    page = out / "index.html"
    shot = tmp_path / "report.png"
    run = chromium("--window-size=1280,2400", f"--screenshot={shot}", page.as_uri(), tmp=tmp_path / "profile")
    assert shot.exists() and shot.stat().st_size > 50_000, run.stderr[-2000:]
    n_imgs = len(re.findall(r"<img ", page.read_text()))
    for width in (1280, 800):  # a laptop window and a narrow one
        state, count, check, dom = layout(page, tmp_path / "profile", width=width)
        assert (state, count) == ("ok", n_imgs)
        assert check["width"] <= width and check["scaled"] == [] and check["clipped"] == [], check
        assert check["wide"] == [], check
    # the counts the browser shows are the CLI's
    _code, stdout, _ = cli("query", "--lake", str(lake), "--format", "json", "SELECT count(*) AS n FROM trials")
    assert re.search(r'id="n-trials" data-n="(\d+)">(\d+) trials', dom).groups() == (str(json.loads(stdout)[0]["n"]),) * 2
    _code, _out, stderr = cli("bounds", "--lake", str(lake), "--budget", str(BUDGETS[0]))
    want = re.search(r"(\d+) of (\d+) config\(s\)", stderr).groups()
    assert re.search(r'id="unbounded" data-n="(\d+)" data-of="(\d+)"', dom).groups() == want
    assert re.search(r"<b>(\d+) of (\d+)</b>", dom).groups() == want

    # The checks must notice what they look for.
    victim = sorted(out.glob("pareto-*.png"))[0]
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / victim.name).unlink()
    assert layout(broken / "index.html", tmp_path / "profile")[:2] == ("missing:1", n_imgs)
    stretched = layout(page, tmp_path / "profile", "<style>figure img { width: 200%; max-width: none; }</style>")[2]
    assert stretched["scaled"] and stretched["clipped"] and stretched["wide"]
    spilled = layout(page, tmp_path / "profile", "<style>table.fit { width: 2400px; }</style>")[2]
    assert "TABLE" in spilled["wide"]
