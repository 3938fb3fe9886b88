"""Trial keys cover the measurement inputs, and the shipped example lake stays resumable.

The shipped lake's first three sweeps (`SHIPPED`) had their keys rewritten with
`sweep.rekey` under the inputs of the spec each one ran. These tests plan those specs the
way `diffaccel sweep` does after its probe (the driver's own key and stored-row logic,
no Ray) and check that every shipped row is found, and that the migration is exact.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sweep import rekey
from sweep import spec as S
from sweep.catalog import ConfigError
from sweep.driver import SweepContext, stored_outcomes
from sweep.lake import LakeWriter
from sweep.pruning import SweepState

ROOT = Path(__file__).resolve().parent.parent
LAKE = ROOT / "datasets" / "example-lake"
SWEEPS = ROOT / "datasets" / "sweeps"
# sweep_id -> the spec it ran (bench/results/*-2026-11-27.log; the rows' n_prompts agree).
SHIPPED = {"815b6166d521": "sd-h100", "6390c029edc6": "map-sd15", "5ec20dce5141": "map-sdxl"}
# Measured with keys that already covered the inputs (no migration): the shapes model's map,
# SD 2.1's (bench/results/map-sd21-h200x2-2026-11-30.log), and the 50-step runs of
# 2026-11-30 (BENCHMARKS.md, "The example map": SD1.5 DPM++ and DDIM, SDXL). The legacy
# copy leaves their rows out: rekey never saw them.
CURRENT = {"66eb3df833ad": "map-shapes", "520e7a3250a7": "map-sd21", "20ff162b95d1": "map-sd15",
           "d6d04ae9622b": "map-sd15", "b24488260878": "map-sdxl", "9fa2be5bf81f": "map-sdxl",
           "482becc49570": "map-sdxl", "c079ea1d45e7": "map-sd15"}


def _rows(lake: Path) -> list[dict]:
    return ds.dataset(lake / "trials", format="parquet", partitioning="hive",
                      ignore_prefixes=[".", "_"]).to_table().to_pylist()


def _state(spec: S.SweepSpec, lake: Path, device_kind: str, versions: dict) -> tuple[SweepState, SweepContext]:
    """What `run_sweep` builds after its probe: keys of every planned point, and which are stored."""
    dtype = spec.dtype if spec.dtype != "auto" else "float16"
    ctx = SweepContext(spec, "test", {"device_kind": device_kind}, versions, dtype,
                       inputs=S.trial_inputs(prompts=spec.prompts(), seeds=spec.seeds, measure=spec.measure,
                                             dtype=dtype, clip_model=spec.clip_model,
                                             judge_model=spec.judge_model))
    state = SweepState(S.expand(spec).combos, spec.budgets, spec.early_stop, ctx.key,
                       stored=stored_outcomes(LakeWriter(str(lake)), spec.metric))
    return state, ctx


def _planned_keys(state: SweepState) -> set[str]:
    return {k for lat in state.lattices for k in lat.keys}


def test_every_shipped_row_is_found_by_the_spec_it_was_measured_under():
    rows = _rows(LAKE)
    found: set[str] = set()
    for sweep_id, name in {**SHIPPED, **CURRENT}.items():
        spec = S.load(SWEEPS / f"{name}.yaml")
        own = [r for r in rows if r["sweep_id"] == sweep_id]
        (device_kind,), (versions,) = {r["device_kind"] for r in own}, {r["versions_json"] for r in own}
        state, _ = _state(spec, LAKE, device_kind, json.loads(versions))
        mine = {r["trial_key"] for r in rows if r["sweep_id"] == sweep_id}
        planned = _planned_keys(state)
        assert mine <= planned, f"{name}: {len(mine - planned)} of its stored keys are not planned"
        # Stored keys of this spec's inputs are skipped, and only those; a failed row is
        # no verdict (it is retried by default), so its key is not skipped.
        verdicts = {r["trial_key"] for r in rows if r["status"] != "failed"}
        assert state.skipped == len(planned & verdicts)
        found |= planned & mine
    assert found == {r["trial_key"] for r in rows}  # no shipped row is orphaned


def test_a_changed_input_re_measures():
    """The same spec with other seeds, prompts or pairs policy finds none of the shipped rows."""
    rows = _rows(LAKE)
    versions = json.loads(rows[0]["versions_json"])
    spec = S.load(SWEEPS / "map-sd15.yaml")
    base, _ = _state(spec, LAKE, "H200", versions)
    assert base.skipped > 0
    changed = [
        dataclasses.replace(spec, seeds=(1,)),
        dataclasses.replace(spec, prompt_count=3),
        dataclasses.replace(spec, measure=dataclasses.replace(spec.measure, screen_pairs=4)),
        dataclasses.replace(spec, measure=dataclasses.replace(spec.measure, confirm_pairs=8)),
        dataclasses.replace(spec, measure=dataclasses.replace(spec.measure, ci_target=0.03)),
        dataclasses.replace(spec, dtype="bfloat16"),
    ]
    for other in changed:
        state, _ = _state(other, LAKE, "H200", versions)
        assert state.skipped == 0, other
    # What only decides which points run (budgets, early stopping) keeps the keys.
    same = dataclasses.replace(spec, budgets=(0.1,), early_stop=dataclasses.replace(spec.early_stop, margin=2.0))
    assert _state(same, LAKE, "H200", versions)[0].skipped == base.skipped


def _specs() -> dict[str, S.SweepSpec]:
    return {sid: S.load(SWEEPS / f"{name}.yaml") for sid, name in SHIPPED.items()}


def _legacy_copy(tmp_path: Path) -> Path:
    """A copy of the shipped lake with the keys it held before keys covered the inputs."""
    lake = tmp_path / "lake"
    shutil.copytree(LAKE / "trials", lake / "trials")
    specs = _specs()
    for path in rekey._trial_files(lake):
        table = pq.read_table(path)
        table = table.filter(pc.is_in(table["sweep_id"], pa.array(sorted(SHIPPED))))
        if table.num_rows == 0:
            path.unlink()
            continue
        parts = rekey._partitions(path, lake / "trials")
        old = []
        for row in table.to_pylist():
            row = {**parts, **row}
            spec = specs[row["sweep_id"]]
            old.append(rekey.row_keys(row, spec, spec.prompts())[0])
        i = table.schema.get_field_index("trial_key")
        pq.write_table(table.set_column(i, table.schema.field(i), [old]), path)
    return lake


def test_rekey_turns_the_old_keys_into_the_shipped_ones_and_loses_no_row(tmp_path):
    lake = _legacy_copy(tmp_path)
    before = _rows(lake)
    shipped = [r for r in _rows(LAKE) if r["sweep_id"] in SHIPPED]
    assert {r["trial_key"] for r in before}.isdisjoint({r["trial_key"] for r in shipped})
    # Old keys: the map spec finds nothing, so a resume would re-measure every point.
    versions = json.loads(shipped[0]["versions_json"])
    assert _state(S.load(SWEEPS / "map-sd15.yaml"), lake, "H200", versions)[0].skipped == 0

    assert rekey.main([str(lake), *(f"{sid}={SWEEPS / name}.yaml" for sid, name in SHIPPED.items())]) == 0
    after = _rows(lake)
    assert len(after) == len(before) == len(shipped)

    def strip(rs):
        return sorted((json.dumps({k: v for k, v in r.items() if k != "trial_key"}, default=str), r["trial_key"])
                      for r in rs)

    assert strip(after) == strip(shipped)  # same rows, and exactly the shipped keys
    assert not list(lake.rglob("*.tmp"))
    # A second run finds every key already new and writes nothing.
    mtimes = {p: p.stat().st_mtime_ns for p in rekey._trial_files(lake)}
    assert rekey.rekey(lake, _specs()) == (len(shipped), 0)
    assert {p: p.stat().st_mtime_ns for p in rekey._trial_files(lake)} == mtimes


def test_rekey_refuses_a_sweep_without_a_spec_or_with_the_wrong_one(tmp_path, capsys):
    lake = _legacy_copy(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in rekey._trial_files(lake)}
    specs = _specs()
    del specs["5ec20dce5141"]
    with pytest.raises(ConfigError, match="no spec given for sweep"):
        rekey.rekey(lake, specs)
    # sd-h100 measured 4 prompts; map-sd15 says 2.
    specs = {**_specs(), "815b6166d521": S.load(SWEEPS / "map-sd15.yaml")}
    with pytest.raises(ConfigError, match=r"was not measured under 'map-sd15': 4 prompt\(s\) \(spec: 2\)"):
        rekey.rekey(lake, specs)
    assert rekey.main([str(lake), f"6390c029edc6={SWEEPS / 'map-sd15.yaml'}"]) == 2
    assert "error: no spec given" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in rekey._trial_files(lake)} == mtimes  # nothing written
