"""The GPU check: its plan holds every measurement the GPU table needs, its own data is what the loaders read, its
preflight says in seconds what is missing or outside the tested range (also where ``datasets`` and accel_recipes
are not installed), the table is on disk after every check, and its smoke mode (the same code on a CPU) writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from site_view import site_packages_without

from accel_recipes.bench.ablate.summary import RunRecord
from accel_recipes.bench.gpu_check import cli, preflight
from accel_recipes.bench.gpu_check.data import write_cifar
from accel_recipes.bench.gpu_check.plan import RECIPES, Data, plan_checks
from accel_recipes.bench.gpu_check.table import NOT_RUN_YET, STARTED
from accel_recipes.config.parsing import load_recipe, make_args
from accel_recipes.data.sources import load_cifar_python

DATA = Data(Path("c10"), Path("c100"), Path("fashion"), Path("vit"))


def test_the_full_plan_measures_what_the_table_needs():
    checks = plan_checks(DATA, smoke=False, updates=30)
    throughput = {(c.recipe, c.setting) for c in checks if c.group == "recipe throughput"}
    assert throughput == {(recipe, precision) for recipe in RECIPES for precision in ("fp32", "fp16", "bf16")}
    fp32 = [c.runs[0] for c in checks if c.setting == "fp32"]
    assert all(run["mixed_precision"] == "no" and run["tf32"] is False for run in fp32)
    paths = [c.runs[0] for c in checks if c.group == "data path"]
    assert [run["data_pipeline"] for run in paths] == ["stream", "stream", "resident", "synthetic"]
    assert [run.get("dataloader_pin_memory") for run in paths[:2]] == [True, False]
    layouts = [c.runs[0] for c in checks if c.group == "memory format, compile"]
    assert layouts[0]["channels_last"] is True and layouts[1]["torch_compile"] is True
    methods = [c.runs[0] for c in checks if c.group == "time-to-accuracy methods"]
    assert [(run["model_ema"], run["data_pipeline"]) for run in methods[:1]] == [(True, "resident")]
    assert methods[1]["aa_layer"] == "blur" and methods[1]["mixed_precision"] == "bf16"
    assert methods[2]["train_img_sizes"] == [16, 24, 32] and methods[2]["train_size_schedule"] == "progressive"
    assert (methods[3]["image_size"], methods[3]["eval_image_size"]) == (24, 32)
    resnet = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "cifar10" / "resnet50.yaml")
    for run in methods:  # every method is a valid recipe as the check launches it
        make_args({**resnet, **run})
    sharded = [c for c in checks if c.group == "sharded, one process"]
    assert [c.launch_args.split()[1] for c in sharded] == [
        "accelerate_configs/fsdp.yaml",
        "accelerate_configs/deepspeed.yaml",
    ]
    for check in sharded:  # train, checkpoint, then resume further in the same folder
        first, second = check.runs
        assert first["save_strategy"] == "steps" and second["resume_from_checkpoint"] == "latest"
        assert second["max_steps"] == 2 * first["max_steps"]
    every_run = [run for check in checks for run in check.runs]
    assert all(run["pretrained"] is False for run in every_run), "the Hub cannot be reached"
    assert all("/" not in run.get("model_name_or_path", "resnet") or run["model_name_or_path"] == "vit"
               for run in every_run)  # fmt: skip


def test_the_smoke_plan_keeps_one_check_of_every_kind():
    full = plan_checks(DATA, smoke=False, updates=30)
    smoke = plan_checks(DATA, smoke=True, updates=2)
    assert {c.group for c in smoke} == {c.group for c in full}
    assert all(run["max_steps"] <= 4 for check in smoke for run in check.runs)


def test_no_fashion_mnist_is_a_listed_skip():
    checks = plan_checks(Data(Path("c10"), Path("c100"), None, Path("vit")), smoke=False, updates=30)
    (accuracy,) = [c for c in checks if c.group == "accuracy"]
    assert "dataset-fashion-mnist" in accuracy.skip_reason and not accuracy.runs


@pytest.mark.parametrize(("variant", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_the_generated_cifar_batches_load_as_cifar(tmp_path, variant, classes):
    folder = write_cifar(tmp_path, variant, train=50, test=20)
    dataset = load_cifar_python(folder)
    assert len(dataset["train"]) == 50 and len(dataset["test"]) == 20
    assert dataset["train"].features["label"].num_classes == classes


@pytest.mark.slow
def test_smoke_mode_writes_the_table(tmp_path):
    output_dir = tmp_path / "gpu-check"
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "gpu_check.py"), "--smoke", "--output_dir", str(output_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = (output_dir / "gpu_check.md").read_text()
    command = "- command: python recipes/gpu_check.py --smoke"
    for line in (command, "- device: ", "- software: torch ", "- status: complete"):
        assert line in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(plan_checks(DATA, smoke=True, updates=2))
    fsdp = next(line for line in rows if "FSDP" in line)
    assert "resumed yes, exported yes" in fsdp
    assert not [line for line in rows if "FAILED" in line]


# The preflight ----------------------------------------------------------------------------------------------------

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]

[project]
name = "example"
requires-python = ">=3.10"
dependencies = [
    "present>=1.0",
    "missing>=2.0",
    "old>=3.0",
    "fresh>=1.0",
    "torch>=2.4,<2.15",  # an NVIDIA container's torch is a pre-release with a local tag
    "huggingface-hub>=0.25",
    "windows-only>=1.0; sys_platform == 'win32'",
]

[project.optional-dependencies]
dev = ["pytest>=8.0"]
"""
LOCK = """\
# the development lock
present==1.5.0
missing==2.1.0
old==3.2.0
fresh==1.2.0
torch==2.14.1
huggingface_hub==2.4.0
"""
INSTALLED = {"present": "1.5", "old": "2.9.1", "fresh": "1.3.0", "torch": "2.11.0a0+872d972",
             "huggingface-hub": "2.4.0"}  # fmt: skip


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "lock.txt").write_text(LOCK)
    return tmp_path / "pyproject.toml", tmp_path / "lock.txt"


def without_packaging(monkeypatch) -> None:
    """As on a Python without ``packaging``: its imports fail, versions are compared by the tiny parse."""
    for name in [name for name in sys.modules if name == "packaging" or name.startswith("packaging.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "packaging", None)


@pytest.mark.parametrize("packaging", ["packaging", "tiny parse"])
def test_preflight_verdicts_missing_too_old_newer_than_tested_and_fine(project, monkeypatch, packaging):
    if packaging == "tiny parse":
        without_packaging(monkeypatch)
    asked = []

    def version_of(name: str) -> str | None:
        asked.append(name)
        return INSTALLED.get(name)

    findings = preflight.preflight(*project, version_of=version_of, python_version="3.11.7")
    lines = [finding.line() for finding in findings]
    assert lines == [
        "error: missing is not installed (needs >=2.0, tested up to 2.1.0): "
        "pip install --no-index --find-links <dir> 'missing>=2.0'",
        "error: old 2.9.1 is older than the floor >=3.0 (pyproject.toml): "
        "pip install --no-index --find-links <dir> 'old>=3.0'",
        f"warning: fresh 1.3.0 is newer than tested (1.2.0 in {project[1]}): it may work; a failure may come from "
        "this version",
    ]
    assert "windows-only" not in asked and "pytest" not in asked  # another platform's and an extra's entries


def test_preflight_flags_a_python_outside_requires_python_and_a_capped_version(project):
    findings = preflight.preflight(*project, version_of={**INSTALLED, "torch": "2.15.0"}.get, python_version="3.9.18")
    lines = [finding.line() for finding in findings]
    assert lines[0].startswith("error: Python 3.9.18 is outside requires-python >=3.10 (pyproject.toml)")
    (torch,) = [line for line in lines if "torch" in line]
    assert torch.startswith("error: torch 2.15.0 is outside the supported range >=2.4,<2.15 (pyproject.toml): ")


def test_preflight_prints_one_line_each_and_fails_only_on_errors(project, capsys):
    everything = {**INSTALLED, "missing": "2.1.0", "old": "3.2.0"}
    assert preflight.main(*project, version_of=everything.get) == 0  # a newer-than-tested version only warns
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[0] for line in out] == ["warning:", "preflight:"] and "ok" in out[-1]
    assert preflight.main(*project, version_of=INSTALLED.get) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[0] for line in out] == ["error:", "error:", "warning:", "preflight:"]
    assert out[-1].startswith("preflight: 2 error(s), 1 warning(s)")


def test_an_unreadable_requirement_is_an_error_naming_it(project, capsys):
    project[0].write_text(PYPROJECT.replace('"present>=1.0"', '"present=>1.0"'))
    assert preflight.main(*project, version_of=INSTALLED.get) == 2
    assert "'=>1.0'" in capsys.readouterr().out


def test_without_tomllib_pyproject_reads_the_same():
    """The Python 3.10 fallback (no tomllib, no tomli) reads this repository's pyproject.toml as tomllib does."""
    assert preflight.read_project_keys((ROOT / "pyproject.toml").read_text()) == preflight.read_pyproject()
    assert preflight.read_project_keys(PYPROJECT)[1][4] == "torch>=2.4,<2.15"
    tricky = """[project]\ndependencies = ["uvicorn[standard]>=0.30", 'single>=1',  # "a comment"\n]\n[tool.x]\n"""
    assert preflight.read_project_keys(tricky) == (None, ["uvicorn[standard]>=0.30", "single>=1"])


def run_on_a_node_without(hidden: list[str], args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``python recipes/gpu_check.py ARGS`` on this Python as a node lacking ``hidden`` sees it, with accel_recipes
    not installed either: ``-S`` drops the site-packages, PYTHONPATH lends them back without those."""
    views = site_packages_without([*hidden, "accel_recipes"], tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, views))}
    command = [sys.executable, "-S", str(ROOT / "recipes" / "gpu_check.py"), *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("hidden", [["datasets"], ["datasets", "torch"]])
def test_preflight_on_a_node_without_datasets_names_it_in_one_line(tmp_path, hidden):
    started = time.monotonic()
    result = run_on_a_node_without(hidden, ["--preflight"], tmp_path)
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in hidden:
        (line,) = [line for line in lines if line.startswith(f"error: {name} is not installed")]
        assert f"pip install --no-index --find-links <dir> '{name}>=" in line
    assert all(line.split(" ", 1)[0] in ("error:", "warning:") for line in lines[:-1]) and not result.stderr
    assert lines[-1].startswith(f"preflight: {len(hidden)} error(s)")
    assert seconds < 20, f"the preflight took {seconds:.1f} s"  # seconds, not the minute an import of torch can take


def test_the_check_itself_stops_before_starting_when_the_preflight_fails(tmp_path):
    """With ``datasets`` missing every training run would fail: nothing is started, nothing is written."""
    result = run_on_a_node_without(["datasets"], ["--smoke", "--output_dir", "out"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: datasets is not installed" in result.stdout and not (tmp_path / "out").exists()


def test_the_sandbox_really_lacks_the_hidden_packages(tmp_path):
    """The two tests above would prove nothing if the node could still import what it is said to lack."""
    views = site_packages_without(["datasets", "accel_recipes"], tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, views))}
    probe = "import importlib.util as u; print([u.find_spec(n) is None for n in ('datasets', 'accel_recipes', 'yaml')])"
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "[True, True, False]", result.stderr


# The table, on disk after every check ------------------------------------------------------------------------------


def table_rows(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "gpu_check.json").read_text())["rows"]


def run_with_fake_checks(tmp_path: Path, monkeypatch, stop_at: int | None) -> tuple[Path, list[list[dict]]]:
    """The real loop of ``run_gpu_check`` over the smoke plan, each check's runs replaced by one instant record
    (the ``stop_at``-th raises KeyboardInterrupt, as a check cut off does); returns the table as each check began."""
    output_dir = tmp_path / "gpu-check"
    monkeypatch.setattr(cli, "prepare_data", lambda root, smoke: DATA)
    seen = []

    def run_check(check, index, output_dir, env):
        seen.append(table_rows(output_dir))
        if len(seen) == stop_at:
            raise KeyboardInterrupt
        results = {"steady_samples_per_second": 100.0 * index, "peak_memory_mb": 10.0, "test_accuracy": 0.5}
        return [RunRecord(check.setting, 1, output_dir, 0, 1.0, results=results)]

    monkeypatch.setattr(cli, "run_check", run_check)
    options = cli.build_parser().parse_args(["--smoke", "--output_dir", str(output_dir)])
    if stop_at is None:
        assert cli.run_gpu_check(options, "python recipes/gpu_check.py --smoke") == 0
    else:
        with pytest.raises(KeyboardInterrupt):
            cli.run_gpu_check(options, "python recipes/gpu_check.py --smoke")
    return output_dir, seen


def test_the_table_is_rewritten_after_every_check_and_a_cut_off_keeps_the_finished_rows(tmp_path, monkeypatch):
    output_dir, seen = run_with_fake_checks(tmp_path, monkeypatch, stop_at=3)
    checks = plan_checks(DATA, smoke=True, updates=2)
    ran = [index for index, check in enumerate(checks) if check.skip_reason is None]
    for number, rows in enumerate(seen):  # as each check began: the ones before it finished, it started, rest wait
        assert len(rows) == len(checks)
        for index in ran[:number]:
            assert rows[index]["outcome"] in ("ok", "test accuracy 0.5000")
            assert rows[index]["images/s"] == f"{100.0 * (index + 1):,.1f}"
        assert rows[ran[number]]["outcome"] == STARTED
        assert all(rows[index]["outcome"] == NOT_RUN_YET for index in ran[number + 1 :])
    assert seen[-1] == table_rows(output_dir)  # cut off in the third check: the table as it began
    skipped = [row["outcome"] for row, check in zip(seen[0], checks, strict=True) if check.skip_reason]
    assert skipped == [f"not run: {check.skip_reason}" for check in checks if check.skip_reason]  # from the start
    table = (output_dir / "gpu_check.md").read_text()
    waiting = len(ran) - 3
    assert f"- status: incomplete: 1 check(s) started and not finished, {waiting} not run yet" in table
    assert table.count(f"| {NOT_RUN_YET} |") == waiting and table.count("| 1 |") == 2  # two finished, 1 s each


def test_a_finished_check_says_complete(tmp_path, monkeypatch):
    output_dir, seen = run_with_fake_checks(tmp_path, monkeypatch, stop_at=None)
    rows = table_rows(output_dir)
    assert not [row for row in rows if row["outcome"] in (NOT_RUN_YET, STARTED)]
    assert "- status: complete" in (output_dir / "gpu_check.md").read_text()
    assert len(seen) == sum(check.skip_reason is None for check in plan_checks(DATA, smoke=True, updates=2))


def test_the_runs_import_this_checkout_installed_or_not():
    path = cli.run_environment_here(None)["PYTHONPATH"].split(os.pathsep)
    assert path[0] == str(ROOT)
