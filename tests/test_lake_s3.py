"""s3:// lakes through the real pyarrow S3 client, against a local S3-compatible server
(moto's) that the tests start themselves on 127.0.0.1: sweep, resume, query, tasks, and
an unreachable store as a one-line error."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from lake_rows import demo_rows
from sweep_helpers import ROOT, write_spec
from typer.testing import CliRunner

from diffaccel.cli import app
from sweep.lake import LakeError, LakeReader, LakeWriter

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e .[dev]")

BUCKET = "diffaccel-lakes"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """http://127.0.0.1:PORT of a fresh local S3 server holding an empty bucket."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"  # nothing the tests start listens beyond loopback
    endpoint = f"http://{host}:{port}"
    fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                           endpoint_override=endpoint, allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """The documented environment: credentials, and the endpoint in AWS_ENDPOINT_URL."""
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return dict(os.environ)


def _raw_fs(endpoint: str) -> pafs.S3FileSystem:
    """The store as the tests see it, independent of the code under test."""
    return pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                             endpoint_override=endpoint)


def _stored(endpoint: str, prefix: str) -> dict[str, int]:
    fs = _raw_fs(endpoint)
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return {i.path: i.size for i in infos if i.type == pafs.FileType.File}


def _trial_rows(endpoint: str, prefix: str) -> list[dict]:
    fs = _raw_fs(endpoint)
    rows = []
    for path in _stored(endpoint, f"{prefix}/trials"):
        if path.endswith(".parquet"):
            try:
                rows += pq.read_table(path, filesystem=fs).to_pylist()
            except pa.ArrowInvalid:
                pass  # the test's own planted bad file
    return rows


def _cli(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(env, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "diffaccel.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_writer_and_readers_round_trip_with_the_endpoint_in_the_uri(s3_endpoint, monkeypatch):
    """`?endpoint_override=` in the URI instead of AWS_ENDPOINT_URL; query and bounds on top."""
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    uri = f"s3://{BUCKET}/uri-lake?endpoint_override={s3_endpoint}&region=us-east-1"
    rows = demo_rows(seed=3)
    LakeWriter(uri).write_trials(rows)
    assert len(_trial_rows(s3_endpoint, "uri-lake")) == len(rows)
    assert {r["trial_key"] for r in LakeReader(uri).trial_columns(["trial_key"])} == {r["trial_key"] for r in rows}
    res = CliRunner().invoke(app, ["query", "--lake", uri, "--format", "json",
                                   "SELECT count(*) AS n, count(DISTINCT trial_key) AS k FROM trials_all"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0] == {"n": len(rows), "k": len({r["trial_key"] for r in rows})}
    # the sandbox holds for object stores too: nothing is written back
    before = _stored(s3_endpoint, "uri-lake")
    res = CliRunner().invoke(app, ["query", "--lake", uri, f"COPY (SELECT 1) TO 's3://{BUCKET}/uri-lake/x.csv'"])
    assert res.exit_code == 2 and "query only reads the lake" in res.output
    assert _stored(s3_endpoint, "uri-lake") == before


@pytest.mark.slow
def test_sweep_resume_query_and_tasks_on_s3(s3_env, s3_endpoint, tmp_path):
    """A real tiny sweep (local Ray, tiny SD1.5 on CPU) into s3://, resumed, then read back."""
    lake = f"s3://{BUCKET}/sweep-lake"
    spec = write_spec(tmp_path / "spec.yaml", early_stop={"enabled": False, "prune": False})
    first = _cli(["sweep", str(spec), "--lake", lake, "--quiet"], s3_env)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = _trial_rows(s3_endpoint, "sweep-lake")
    keys = {r["trial_key"] for r in rows}
    # every point once per phase it ran (the bound's point is confirmed too)
    assert len(keys) == 4 and len(rows) == len({(r["trial_key"], r["phase"]) for r in rows})
    assert {r["status"] for r in rows} == {"ok"}
    assert any(p.startswith(f"{BUCKET}/sweep-lake/baselines/model=sd15/") for p in _stored(s3_endpoint, "sweep-lake"))
    # the run is recorded (spec name, budgets) for the report
    runs = LakeReader(lake).sweeps()
    assert [(r["spec_name"], json.loads(r["budgets_json"])) for r in runs] == [("tiny-test", [0.05])]

    # Resume, with a truncated file planted as a killed upload of a foreign tool would leave it:
    # the sweep names it once, skips it, and measures nothing again.
    fs = _raw_fs(s3_endpoint)
    good = next(p for p in _stored(s3_endpoint, "sweep-lake/trials") if p.endswith(".parquet"))
    bad = good.rsplit("/", 1)[0] + "/part-truncated.parquet"
    with fs.open_input_file(good) as f:
        data = f.read()
    with fs.open_output_stream(bad) as f:
        f.write(data[: len(data) // 2])
    again = _cli(["sweep", str(spec), "--lake", lake, "--quiet"], s3_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"warning: skipping {bad}: not a readable Parquet file" in again.stderr
    assert "4 already stored" in again.stdout and "0 row(s) written" in again.stdout
    assert len(_trial_rows(s3_endpoint, "sweep-lake")) == len(rows)
    assert len(LakeReader(lake).sweeps()) == 1  # a run with nothing to do records nothing
    strict = _cli(["sweep", str(spec), "--lake", lake, "--strict", "--quiet"], s3_env, timeout=120)
    assert strict.returncode == 2 and bad in strict.stderr and len(strict.stderr.strip().splitlines()) == 1

    query = _cli(["query", "--lake", lake, "--format", "json",
                  "SELECT count(*) AS n, min(speedup) > 0 AS positive FROM trials"], s3_env, timeout=120)
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout) == [{"n": 4, "positive": True}]
    out = tmp_path / "tasks"
    tasks = _cli(["tasks", "--lake", lake, "--out", str(out), "--budget", "0.5"], s3_env, timeout=120)
    assert tasks.returncode == 0, tasks.stderr
    lines = [json.loads(x) for x in (out / "tasks.jsonl").read_text().splitlines()]
    assert lines and all(t["config"]["model"] == "sd15" and t["budget"] == 0.5 for t in lines)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unreachable_uri(monkeypatch) -> str:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    return f"s3://{BUCKET}/lake?endpoint_override=http://127.0.0.1:{_closed_port()}&region=us-east-1"


@pytest.mark.slow  # over 5 s: `make check` stays under 2 minutes
def test_unreachable_s3_lake_is_one_line_naming_the_uri(monkeypatch):
    uri = _unreachable_uri(monkeypatch)
    start = time.monotonic()
    with pytest.raises(LakeError, match="cannot reach the lake") as err:
        LakeReader(uri).trial_columns(["trial_key"])
    assert time.monotonic() - start < 30
    port = uri.split("127.0.0.1:")[1].split("&")[0]
    assert uri in str(err.value) and "\n" not in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


@pytest.mark.slow
def test_unreachable_s3_lake_is_one_line_in_every_command(monkeypatch, tmp_path):
    uri = _unreachable_uri(monkeypatch)
    env = dict(os.environ)
    spec = write_spec(tmp_path / "spec.yaml")
    for args in (["query", "--lake", uri, "SELECT 1"], ["sweep", str(spec), "--lake", uri, "--quiet"],
                 ["tasks", "--lake", uri, "--out", str(tmp_path / "t")],
                 ["report", "--lake", uri, "--out", str(tmp_path / "r")]):
        start = time.monotonic()
        res = _cli(args, env, timeout=120)
        took = time.monotonic() - start
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (args, res.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and uri in lines[0], (args, res.stderr[-2000:])
        assert "Could not connect" in lines[0] or "connect" in lines[0].lower()
        assert took < 60, (args, took)
    assert not (tmp_path / "t").exists() and not (tmp_path / "r").exists()
