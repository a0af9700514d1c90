"""The package as a wheel: built, installed as on a machine without network (``pip install --no-index
--find-links <folder of wheels> accel-recipes``, README.md: Machines without network) into an environment where the
editable install is invisible, and used from a folder outside the clone: a tiny training through the
``accel-recipes-train`` console entry point gives the card and the model folder, ``accel-recipes-predict`` predicts,
and a Python process that cannot import accel_recipes loads the model with the card's line and predicts the same
labels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import datagen
import pytest
from conftest import ROOT
from outside_loader import top1_of_predict, top1_outside
from site_view import site_packages_without

pytestmark = pytest.mark.slow


def run(command: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def isolated_environment(root: Path) -> Path:
    """A fresh venv that has this interpreter's dependencies installed but not accel_recipes, as a GPU node with
    its own stack has: views of the site-packages without accel_recipes and its metadata (``site_view``) are added
    by a .pth file, and .pth files inside them (the editable finder's) are not processed."""
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    (site_packages,) = (venv / "lib").glob("python*/site-packages")
    dependencies = site_packages_without(["accel_recipes"], root / "dependencies")
    (site_packages / "dependencies.pth").write_text("\n".join(map(str, dependencies)) + "\n")
    return venv


def offline_pip_environment() -> dict[str, str]:
    """pip with no configuration: no index, no find-links but the ones on its command line."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def test_the_wheel_trains_predicts_and_shares_from_outside_the_clone(tmp_path):
    assert sysconfig.get_paths()["purelib"]  # the interpreter has a site-packages to lend its dependencies from
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, ROOT], cwd=tmp_path)
    (wheel,) = dist.glob("accel_recipes-*.whl")
    venv = isolated_environment(tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    # Offline, by name, dependencies included: pip finds accel-recipes only in dist/ and resolves every declared
    # dependency against what the environment already has (the lent site-packages); one missing or out of range
    # fails the install, as it would on the node.
    install = [python, "-m", "pip", "install", "--no-index", "--find-links", dist, "accel-recipes"]
    installed = run(install, cwd=tmp_path, env=offline_pip_environment()).stdout
    assert "Successfully installed accel-recipes-" in installed, installed

    work = tmp_path / "work"  # outside the clone: no recipes/, no model_cards/, no accel_recipes/ beside it
    work.mkdir()
    where = run([python, "-c", "import accel_recipes; print(accel_recipes.__file__)"], cwd=work).stdout.strip()
    assert Path(where).is_relative_to(venv), f"accel_recipes came from {where}, not the wheel"

    shutil.copy(ROOT / "recipes" / "cifar10" / "resnet50.yaml", work / "resnet50.yaml")  # as a wheel user gets it
    images = datagen.make_image_folder(work / "data", num_classes=3, per_class=8)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    run([
        bin_dir / "accel-recipes-train", "--config", "resnet50.yaml", "--model_name_or_path", "test_resnet",
        "--dataset_name", images, "--output_dir", "run", "--mixed_precision", "no", "--max_steps", "3",
        "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--dataloader_num_workers", "0",
        "--data_pipeline", "stream", "--disable_tqdm", "true",
    ], cwd=work, env=env)  # fmt: skip

    model = work / "run" / "model"
    card = (model / "README.md").read_text()
    assert "trust_remote_code=True" in card and "custom_code" in card and "accel-recipes-predict" in card
    assert (model / "modeling_small_stem_resnet.py").is_file() and (model / "model.safetensors").is_file()
    test_images = sorted((images / "test").rglob("*.png"))
    predicted = top1_of_predict([bin_dir / "accel-recipes-predict"], model, test_images, work)
    snippet, outside = top1_outside(model / "README.md", model, test_images, tmp_path)
    assert f'pipeline("image-classification", model="{model}", trust_remote_code=True)' in snippet
    assert "auto_map" in (model / "config.json").read_text()
    assert outside == predicted
