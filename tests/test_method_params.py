"""A method parameter is declared once, in its config dataclass: a field added to a copy
of a config reaches the lake schema, the tag and its parser, the library's keyword
arguments and a rendered script, through a test-local registry and no other edit."""

import io
import re
from dataclasses import make_dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codegen.scripts import render
from codegen.tasks import Task
from sweep import lake_schema
from sweep.catalog import (
    METHODS,
    Acceleration,
    ConfigError,
    DeepCacheConfig,
    Methods,
    TGateConfig,
    ToMeConfig,
    param,
    parse_tag,
)

# A fake ToMe parameter whose library keyword differs from its name.
FakeToMe = make_dataclass(
    "FakeToMe",
    [("stride", int, param(2, "fake: merge every N-th token; larger is faster",
                           low=1, high=4, faster=+1, letter="K", kwarg="merge_stride"))],
    bases=(ToMeConfig,), frozen=True,
)
FAKE = Methods((DeepCacheConfig, TGateConfig, FakeToMe))


def test_the_fake_parameter_is_known_with_its_metadata():
    spec = FAKE.params["tome"]["stride"]
    assert (spec.type, spec.default, spec.low, spec.high, spec.faster) == (int, 2, 1, 4, 1)
    assert FAKE.owner["stride"] == "tome" and "stride" not in METHODS.owner


def test_the_fake_parameter_reaches_the_lake_schema():
    schema = lake_schema.trial_schema(FAKE)
    assert schema.field("stride").type == pa.int32()
    assert "stride" not in lake_schema.TRIAL_SCHEMA.names
    # The column sits with the other parameters, before params_json, and a row keeps it.
    names = schema.names
    assert names.index("max_downsample") < names.index("stride") < names.index("params_json")
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"tag": "TM50D1K3", "stride": 3}], schema=schema), buf)
    assert pq.read_table(io.BytesIO(buf.getvalue())).column("stride").to_pylist() == [3]


def test_the_fake_parameter_reaches_the_tag_and_its_parser():
    acc = Acceleration.from_params("deepcache+tome", {"stride": 3}, model="sd15", steps=20, registry=FAKE)
    assert acc.tag == "DC3B0_TM50D1K3"
    assert FAKE.parse_tag(acc.tag) == acc
    # The real registry knows no K: it refuses the tag rather than dropping the parameter.
    with pytest.raises(ConfigError, match="cannot read 'TM50D1K3'"):
        parse_tag(acc.tag)
    # The existing names are unchanged for the real configs.
    assert Acceleration.from_params("deepcache+tgate+tome", {}).tag == "DC3B0_TG10S5F1W2_TM50D1"


def test_the_fake_parameter_is_checked_and_passed_by_its_library_name():
    with pytest.raises(ConfigError, match=r"stride=9 is out of range: use 1–4") as err:
        Acceleration.from_params("tome", {"stride": 9}, model="sd15", steps=20, registry=FAKE)
    assert err.value.param == "stride"
    acc = Acceleration.from_params("tome", {"stride": 3}, registry=FAKE)
    assert acc.tome.kwargs() == {"ratio": 0.5, "max_downsample": 1, "merge_stride": 3}


def test_the_fake_parameter_reaches_a_rendered_script():
    acc = Acceleration.from_params("tome", {"stride": 3}, model="sd15", steps=2, registry=FAKE)
    config = {"device_kind": "H100", "model": "sd15", "scheduler": "ddim", "steps": 2, "resolution": 64,
              "method": acc.combo}
    choice = {"method": acc.combo, "params": acc.params, "tag": acc.tag, "speedup": 1.5, "quality_loss": 0.01,
              "trial_key": "0123abcd4567ef89", "device_kind": "H100", "preset": "arch", "dtype": "float16"}
    task = Task(task_id="0123456789ab", status="feasible", config=config, budget=0.02, metric="ssim",
                policy="closest", requested_speedup=1.4, difficulty="normal", scale=1.0, best_speedup=1.5,
                choice=choice, text="a task text")
    script = render(task, methods=FAKE)
    assert script.name == "sd15_ddim_2s_64px_TM50D1K3_h100.py"
    assert 'TOME = {"ratio": 0.5, "max_downsample": 1, "merge_stride": 3}' in script.source
    assert "tomesd.apply_patch(pipe, **TOME)" in script.source
    # The real registry refuses the parameter it does not know.
    with pytest.raises(ConfigError, match="unknown parameter 'stride'"):
        render(task)


def test_docs_list_the_parameter_columns_the_configs_give():
    # The lake's documentation is the one copy of the columns kept by hand: it must
    # name each derived parameter column, with its type, and no other.
    doc = (Path(__file__).resolve().parent.parent / "docs" / "lake.md").read_text()
    types = {"int32": pa.int32(), "double": pa.float64()}
    rows = dict(re.findall(r"^\| `(\w+)` \| (\w+) \| (?:DeepCache|T-GATE|ToMe): ", doc, re.M))
    assert {n: types[t] for n, t in rows.items()} == dict(lake_schema.param_columns()[:-1])
