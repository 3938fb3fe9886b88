"""`diffaccel sweep` input handling: a bad spec or lake fails before Ray starts."""

from __future__ import annotations

import yaml
from sweep_helpers import ray_children, tiny, write_spec
from typer.testing import CliRunner

from diffaccel.cli import app


def test_an_invalid_spec_fails_before_ray_starts(tmp_path):
    import ray

    data = tiny()
    data["methods"]["deepcache"]["cache_branch_id"] = [0, 40]
    data["sheduler"] = ["ddim"]
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(tmp_path / "lake")])
    assert result.exit_code == 2
    assert "methods.deepcache.cache_branch_id: 40 is out of range on Stable Diffusion 1.5" in result.output
    assert "sheduler: unknown key: did you mean 'schedulers'?" in result.output
    assert not ray.is_initialized() and not ray_children()
    assert not (tmp_path / "lake").exists()


def test_dry_run_shows_the_plan_and_starts_nothing(tmp_path):
    import ray

    spec = write_spec(tmp_path / "spec.yaml")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(tmp_path / "lake"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 config(s), 1 config×combo grid(s), 4 point(s)" in result.output
    assert "deepcache" in result.output
    assert not ray.is_initialized() and not (tmp_path / "lake").exists()


def test_a_lake_that_cannot_be_created_fails_before_ray_starts(tmp_path):
    import ray

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    spec = write_spec(tmp_path / "spec.yaml")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(blocker / "lake")])
    assert result.exit_code == 2
    assert "cannot create the lake" in result.output
    assert not ray.is_initialized() and not ray_children()


def test_part_of_a_spec_runs_under_the_spec_own_keys(tmp_path):
    """`--scheduler/--steps/--combo` pick part of a map (resume one config of it), with
    exactly the keys the whole spec gives those points, so a later run of the whole spec
    skips them; a value the spec lacks is one line naming the values it has."""
    from pathlib import Path

    from sweep.catalog import trial_key
    from sweep.spec import expand, load, only, trial_inputs

    root = Path(__file__).resolve().parent.parent
    spec = load(root / "datasets" / "sweeps" / "map-sd15.yaml")
    part = only(spec, schedulers=["dpmpp"], steps=[50], combos=["tome+deepcache"])

    def keys(s):
        inputs = trial_inputs(prompts=[s.prompts_file, str(s.prompt_count)], seeds=s.seeds, measure=s.measure,
                              dtype=s.dtype, clip_model=s.clip_model, judge_model=s.judge_model)
        return {trial_key(cp.config, a, "H200", {"v": "1"}, inputs) for cp in expand(s).combos for a in cp.points()}

    whole = keys(spec)
    got = keys(part)
    assert got and got < whole
    assert {(cp.config.scheduler, cp.config.steps, cp.combo) for cp in expand(part).combos} == \
        {("dpmpp", 50, "deepcache+tome")}

    result = CliRunner().invoke(app, ["sweep", str(root / "datasets" / "sweeps" / "map-sd15.yaml"), "--lake",
                                      str(tmp_path / "lake"), "--scheduler", "dpmpp", "--steps", "50", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 config(s), 7 config×combo grid(s), 11 point(s)" in result.output
    result = CliRunner().invoke(app, ["sweep", str(root / "datasets" / "sweeps" / "map-sd15.yaml"), "--lake",
                                      str(tmp_path / "lake"), "--scheduler", "euler"])
    assert result.exit_code == 2
    assert "--scheduler euler: spec 'map-sd15' has ddim, dpmpp; pick among those" in result.output
    assert not (tmp_path / "lake").exists()
