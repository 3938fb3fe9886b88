"""`diffaccel query` and docs/lake.md: every SQL and pandas snippet there runs on a real lake."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from lake_rows import baseline, demo_rows
from typer.testing import CliRunner

from codegen.lake import open_lake
from codegen.query import write_frame
from diffaccel.cli import app
from sweep.lake import LakeWriter
from sweep.lake_schema import BASELINE_SCHEMA, TRIAL_SCHEMA

DOC = Path(__file__).resolve().parent.parent / "docs" / "lake.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    rows = demo_rows(seed=1)
    for r in rows[::3]:
        r["sweep_id"] = "second"
    LakeWriter(str(root / "lake")).write_trials(rows)
    LakeWriter(str(root / "lake")).write_baselines([baseline(device_kind="H100"), baseline(device_kind="H200")])
    return root


def query(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["query", *args])
    return result.exit_code, result.output


def test_docs_describe_every_column():
    text = DOC.read_text()
    missing = [f.name for f in (*TRIAL_SCHEMA, *BASELINE_SCHEMA) if f"`{f.name}`" not in text]
    assert not missing, f"docs/lake.md does not describe {missing}"


def test_docs_sql_snippets_run(lake_dir):
    sqls = blocks("sql")
    assert len(sqls) == 5
    con = open_lake(str(lake_dir / "lake")).connect()
    for sql in sqls:
        df = con.sql(sql).df()
        assert len(df) > 0, sql
    # and through the CLI, as the docs say
    code, out = query("--lake", str(lake_dir / "lake"), "--format", "json", sqls[4])
    assert code == 0, out
    per_sweep = {r["sweep_id"]: r for r in json.loads(out)}
    assert set(per_sweep) == {"demo", "second"}
    assert sum(r["total"] for r in per_sweep.values()) == len(demo_rows(seed=1))


def test_docs_pandas_snippets_run(lake_dir, monkeypatch):
    monkeypatch.chdir(lake_dir)
    snippets = blocks("python")
    assert len(snippets) == 6
    ns: dict = {}
    for code in snippets:
        tree = ast.parse(code)
        last = tree.body.pop() if isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "docs/lake.md", "exec"), ns)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "docs/lake.md", "eval"), ns)
            assert isinstance(value, pd.DataFrame | pd.Series) and len(value) > 0, code


def test_query_formats(lake_dir):
    lake = str(lake_dir / "lake")
    sql = "SELECT method, tag, speedup, finished_at FROM bounds ORDER BY speedup DESC LIMIT 3"
    code, table = query("--lake", lake, sql)
    assert code == 0 and "(3 rows)" in table and table.splitlines()[0].split() == ["method", "tag", "speedup",
                                                                                    "finished_at"]
    code, csv = query("--lake", lake, "--format", "csv", sql)
    df = pd.read_csv(io.StringIO(csv))
    assert code == 0 and list(df.columns) == ["method", "tag", "speedup", "finished_at"] and len(df) == 3
    code, js = query("--lake", lake, "--format", "json", sql)
    recs = json.loads(js)
    assert code == 0 and [r["speedup"] for r in recs] == list(df["speedup"])
    assert recs[0]["finished_at"].startswith("2025-01-01T")
    # --budget and --metric redefine the `bounds` view for this query only
    loose = json.loads(query("--lake", lake, "--format", "json", "--budget", "0.05", "--metric", "clip",
                             "SELECT budget, metric, sum(speedup) AS s FROM bounds GROUP BY ALL")[1])
    tight = json.loads(query("--lake", lake, "--format", "json",
                             "SELECT budget, metric, sum(speedup) AS s FROM bounds GROUP BY ALL")[1])
    assert (loose[0]["budget"], loose[0]["metric"], tight[0]["budget"], tight[0]["metric"]) == (0.05, "clip", 0.02,
                                                                                               "ssim")
    assert loose[0]["s"] > tight[0]["s"]


def test_query_errors(lake_dir, tmp_path):
    lake = str(lake_dir / "lake")
    code, out = query("--lake", lake, "SELECT nope FROM trials")
    assert code == 2 and "nope" in out and "Views: trials" in out
    code, out = query("--lake", lake, "--format", "xml", "SELECT 1")
    assert code == 2 and "--format 'xml'" in out
    code, out = query("--lake", str(tmp_path / "missing"), "SELECT 1")
    assert code == 2 and "no lake at" in out
    code, out = query("--lake", lake, "--budget", "nan", "SELECT 1")
    assert code == 2 and "budget" in out


def test_query_bad_file_warns_or_fails_strictly(tmp_path):
    LakeWriter(str(tmp_path)).write_trials(demo_rows()[:5])
    bad = next((tmp_path / "trials").glob("*/*")) / "part-bad.parquet"
    bad.write_bytes(b"not parquet at all")
    code, out = query("--lake", str(tmp_path), "SELECT count(*) AS n FROM trials")
    assert code == 0 and f"warning: skipping {bad}" in out and " 5" in out
    code, out = query("--lake", str(tmp_path), "--strict", "SELECT count(*) FROM trials")
    assert code == 2 and str(bad) in out


def test_write_frame_empty():
    buf = io.StringIO()
    write_frame(pd.DataFrame({"a": []}), "table", buf)
    assert buf.getvalue() == "(no rows; columns: a)\n"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("sql, what", [
    # the repro: duplicate rows written into a partition of the lake
    ("COPY (SELECT * FROM trials_all) TO '{lake}/trials/model=sd15/method=deepcache/part-evil.parquet' "
     "(FORMAT parquet)", "write"),
    ("COPY (SELECT 1 AS x) TO '{tmp}/out.csv'", "write"),
    ("EXPORT DATABASE '{lake}/dump'", "write"),
    ("ATTACH '{lake}/evil.duckdb' AS evil", "write"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read"),
    ("SELECT * FROM read_parquet('{lake}/trials/*/*/*.parquet')", "read"),
    ("SET enable_external_access = true", "unlock"),
])
def test_query_cannot_write_or_read_outside_the_lake(lake_dir, tmp_path, sql, what):
    lake = lake_dir / "lake"
    before = _files(lake)
    code, out = query("--lake", str(lake), sql.format(lake=lake, tmp=tmp_path))
    assert code == 2, out
    if what == "unlock":
        assert "configuration has been locked" in out
    else:
        assert "query only reads the lake" in out and "redirect the output" in out
    assert "Traceback" not in out
    assert _files(lake) == before and not list(tmp_path.iterdir())
    # the views still answer after the refusal
    code, out = query("--lake", str(lake), "--format", "json", "SELECT count(*) AS n FROM trials")
    assert code == 0 and json.loads(out)[0]["n"] > 0
