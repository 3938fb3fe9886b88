"""The HTML report: rendered from a lake through the CLI, and opened in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from lake_rows import baseline, demo_rows, trial
from typer.testing import CliRunner

from codegen.lake import open_lake
from sweep.cli import app
from sweep.lake import LakeWriter

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NASTY = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    rows = [r for r in demo_rows(seed=3, preset="tiny") if r["model"] == "sd15" and r["scheduler"] == "ddim"]
    rows[0]["sweep_id"] = NASTY  # every value the page embeds must be escaped
    LakeWriter(str(lake)).write_trials(rows)
    LakeWriter(str(lake)).write_baselines([baseline(device_kind=d, steps=s) for d in ("H100", "H200") for s in (20, 50)])
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["report", "--lake", str(lake), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return lake, out


def chromium(*args: str, tmp) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def images_state(page, tmp) -> tuple[str, int]:
    """What the page's own check says once loaded: ('ok' | 'missing:N', image count)."""
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri(), tmp=tmp).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    state = re.search(r'data-images="([^"]*)"', body.group(0)).group(1)
    count = re.search(r'data-image-count="(\d+)"', body.group(0))
    return state, int(count.group(1)) if count else -1


def test_report_content(report):
    lake, out = report
    html = (out / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    # per config (2 GPUs x 2 step counts) a Pareto chart, and per GPU a steps chart
    assert sum(s.startswith("pareto-") for s in srcs) == 4 and sum(s.startswith("steps-") for s in srcs) == 2
    assert all((out / s).stat().st_size > 10_000 for s in srcs)
    assert NASTY not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "Plumbing check, not a result" in html and "random-weight presets" in html
    assert "https://" not in html and "http://" not in html  # nothing fetched from the network
    bounds = open_lake(str(lake)).bounds()
    for speedup in bounds["speedup"]:
        assert f"{speedup:.2f}×" in html
    for status in ("ok", "stopped", "pruned", "failed"):
        assert f"<th>{status}</th>" in html
    assert "torch 2.13.0" in html and "NVIDIA H200" in html


def test_no_plumbing_note_for_real_weights(tmp_path):
    LakeWriter(str(tmp_path / "lake")).write_trials([trial("deepcache", {"cache_interval": 3}, preset="hub")])
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "Plumbing check" not in (tmp_path / "r" / "index.html").read_text()


def test_report_bad_input_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "none"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no lake at" in result.output
    assert not (tmp_path / "r").exists()
    (tmp_path / "lake" / "trials").mkdir(parents=True)
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "r"),
                                      "--metric", "lpips"])
    assert result.exit_code == 2 and "unknown quality metric 'lpips'" in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_report_renders_in_a_browser_with_every_image(report, tmp_path):
    _lake, out = report
    page = out / "index.html"
    shot = tmp_path / "report.png"
    run = chromium("--window-size=1280,2400", f"--screenshot={shot}", page.as_uri(), tmp=tmp_path / "profile")
    assert shot.exists() and shot.stat().st_size > 50_000, run.stderr[-2000:]
    n_imgs = len(re.findall(r"<img ", page.read_text()))
    assert images_state(page, tmp_path / "profile") == ("ok", n_imgs)
    # The check must notice a missing image.
    victim = sorted(out.glob("pareto-*.png"))[0]
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / victim.name).unlink()
    assert images_state(broken / "index.html", tmp_path / "profile") == ("missing:1", n_imgs)


def test_report_of_a_lake_with_nothing_measured(tmp_path):
    LakeWriter(str(tmp_path / "lake")).write_trials([trial("tgate", {"gate_step": 4}, status="failed"),
                                               trial("tome", {"ratio": 0.5}, status="pruned")])
    result = CliRunner().invoke(app, ["report", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert "No trial is within the budget." in html and "<img" not in html
    assert re.search(r"<td>s1</td><td>ToMe</td><td class=\"num\">0</td><td class=\"num\">0</td>"
                     r"<td class=\"num\">1</td>", html)
