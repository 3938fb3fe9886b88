"""Re-key trial rows written before trial keys covered the measurement inputs.

A trial key used to hash the config, the point, the GPU kind and the library versions
only, so a spec with other prompts, seeds or pairs policy found the old rows and never
re-measured. Keys now also cover those inputs (`catalog.measurement_inputs`). A lake
written before holds the old keys, which no sweep looks for any more: every point would
be measured again. This rewrites each old key with the inputs its row was measured
under, taken from the spec of the sweep that wrote it:

    python -m sweep.rekey LAKE SWEEP_ID=SPEC.yaml [SWEEP_ID=SPEC.yaml ...] [--check]

Nothing is guessed. Every row's sweep must be given a spec; a row must carry the old key
(recomputed from its own columns) or already the new one (so a second run changes
nothing); and what a row records of its inputs (dtype, prompt count, CLIP model) must
match its spec. Any mismatch stops the migration before a file is touched.

Each file is rewritten whole, under a hidden temporary name, read back and compared
(same rows, every column but `trial_key` identical) and then renamed over the original:
a crash leaves either file, never half of one. Baseline keys are not affected (a
baseline is the same whatever the prompts and pairs policy of the trials compared with
it). Local lakes only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.catalog import Acceleration, ConfigError, PipelineConfig, trial_key
from sweep.lake_schema import TRIALS_DIR
from sweep.spec import SweepSpec, load, trial_inputs


@dataclass
class FilePlan:
    path: Path
    rows: int
    new_keys: list[str]
    changed: int  # rows whose key changes


def _partitions(path: Path, root: Path) -> dict[str, str]:
    out = {}
    for part in path.relative_to(root).parts[:-1]:
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


def _trial_files(lake: Path) -> list[Path]:
    root = lake / TRIALS_DIR
    return sorted(p for p in root.rglob("*.parquet")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))


def row_keys(row: Mapping[str, Any], spec: SweepSpec, prompts: list[str]) -> tuple[str, str]:
    """(old key, new key) of a stored trial row measured under `spec`."""
    cfg = PipelineConfig(model=row["model"], scheduler=row["scheduler"], steps=row["steps"], preset=row["preset"],
                         resolution=row["resolution"], batch=row["batch"], model_path=row["model_path"],
                         guidance_scale=row["guidance_scale"])
    acc = Acceleration.from_params(row["method"], json.loads(row["params_json"]))
    versions = json.loads(row["versions_json"])
    inputs = trial_inputs(prompts=prompts, seeds=spec.seeds, measure=spec.measure, dtype=row["dtype"],
                          clip_model=spec.clip_model, judge_model=spec.judge_model)
    return (trial_key(cfg, acc, row["device_kind"], versions),
            trial_key(cfg, acc, row["device_kind"], versions, inputs))


def _check_inputs(row: Mapping[str, Any], spec: SweepSpec, where: str) -> None:
    """What a row records of its inputs must agree with the spec said to have made it."""
    wrong = []
    if spec.dtype != "auto" and row["dtype"] != spec.dtype:
        wrong.append(f"dtype {row['dtype']} (spec: {spec.dtype})")
    # n_prompts counts the (prompt, seed) pairs evaluated; a stopped trial evaluated fewer.
    pairs = spec.prompt_count * len(spec.seeds)
    n = row.get("n_prompts")
    if n is not None and (n > pairs or (row.get("status") == "ok" and n != pairs)):
        wrong.append(f"{n} prompt(s) (spec: {pairs})")  # prompts x seeds
    if (row.get("clip_model") or None) != spec.clip_model:
        wrong.append(f"clip_model {row.get('clip_model')!r} (spec: {spec.clip_model!r})")
    if wrong:
        raise ConfigError(f"{where} (sweep {row['sweep_id']}) was not measured under {spec.name!r}: "
                          f"{', '.join(wrong)}: give that sweep the spec it ran")


def plan_rekey(lake: str | os.PathLike, specs: Mapping[str, SweepSpec]) -> list[FilePlan]:
    """The new key of every trial row, checked; raises `ConfigError` before any write."""
    root = Path(lake)
    files = _trial_files(root)
    if not files:
        raise ConfigError(f"{root / TRIALS_DIR} holds no trial files: pass a lake folder")
    prompts = {sid: spec.prompts() for sid, spec in specs.items()}
    plans, unknown = [], set()
    for path in files:
        table = pq.read_table(path)
        parts = _partitions(path, root / TRIALS_DIR)
        new_keys, changed = [], 0
        for i, row in enumerate(table.to_pylist()):
            row = {**parts, **row}
            spec = specs.get(row["sweep_id"])
            if spec is None:
                unknown.add(str(row["sweep_id"]))
                continue
            where = f"{path.relative_to(root)} row {i}"
            _check_inputs(row, spec, where)
            old, new = row_keys(row, spec, prompts[row["sweep_id"]])
            if row["trial_key"] not in (old, new):
                raise ConfigError(f"{where}: trial_key {row['trial_key']} is neither the old key of its "
                                  "columns nor the new one: it was not written by this project's sweep")
            changed += row["trial_key"] != new
            new_keys.append(new)
        plans.append(FilePlan(path, table.num_rows, new_keys, changed))
    if unknown:
        raise ConfigError(f"no spec given for sweep(s) {', '.join(sorted(unknown))}: pass SWEEP_ID=SPEC.yaml "
                          "for each (the spec that sweep ran)")
    return plans


def _rewrite(fp: FilePlan) -> None:
    table = pq.read_table(fp.path)
    col = table.schema.get_field_index("trial_key")
    new = table.set_column(col, table.schema.field(col), pa.array(fp.new_keys, type=table.schema.field(col).type))
    tmp = fp.path.with_name(f".{fp.path.name}.rekey.tmp")
    try:
        pq.write_table(new, tmp)
        back = pq.read_table(tmp)
        if back.num_rows != table.num_rows or not back.drop_columns(["trial_key"]).equals(
                table.drop_columns(["trial_key"])) or back.column("trial_key").to_pylist() != fp.new_keys:
            raise OSError(f"{tmp} does not read back as written")
        os.replace(tmp, fp.path)
    finally:
        tmp.unlink(missing_ok=True)


def rekey(lake: str | os.PathLike, specs: Mapping[str, SweepSpec], *, write: bool = True) -> tuple[int, int]:
    """Re-key a lake's trial rows; (rows, rows re-keyed). `write=False` only checks."""
    plans = plan_rekey(lake, specs)
    before = sum(fp.rows for fp in plans)
    if write:
        for fp in plans:
            if fp.changed:
                _rewrite(fp)
        after = sum(pq.read_metadata(fp.path).num_rows for fp in plans)
        if after != before:  # _rewrite compares each file; this guards the sum
            raise OSError(f"the lake held {before} trial rows before re-keying and {after} after")
    return before, sum(fp.changed for fp in plans)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    write = "--check" not in args
    args = [a for a in args if a != "--check"]
    if len(args) < 2 or any("=" not in a for a in args[1:]):
        print("usage: python -m sweep.rekey LAKE SWEEP_ID=SPEC.yaml [SWEEP_ID=SPEC.yaml ...] [--check]",
              file=sys.stderr)
        return 2
    try:
        specs = {sid: load(path) for sid, _, path in (a.partition("=") for a in args[1:])}
        rows, changed = rekey(args[0], specs, write=write)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verb = "re-keyed" if write else "would re-key"
    print(f"{args[0]}: {rows} trial row(s), {verb} {changed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
