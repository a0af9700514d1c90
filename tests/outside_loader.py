"""Loading a model folder the way its card says, in a separate Python process in which importing accel_recipes
fails: the proof that a shared model needs nothing of this project.

``card_snippet`` takes the first Python block of the card's "How to use" and points it at the local folder (the
Hub id becomes the folder; timm's ``hf-hub:`` becomes its local twin ``local-dir:``). ``top1_outside`` runs that
block, unchanged otherwise, and predicts each image with what it built: the pipeline, or the timm model with the
card's ``data_config``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

BLOCK_ACCEL_RECIPES = """
import sys

class _NoAccelRecipes:
    def find_spec(self, name, path=None, target=None):
        if name == "accel_recipes" or name.startswith("accel_recipes."):
            raise ImportError(f"{name} is not importable in this process")
        return None

sys.meta_path.insert(0, _NoAccelRecipes())
try:
    import accel_recipes  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("accel_recipes is importable, the test proves nothing")
"""

PREDICT = """
import contextlib
import io
import json
from PIL import Image

images = json.loads(sys.argv[1])
labels = []
if "classifier" in globals():
    for image in images:
        labels.append(classifier(Image.open(image).convert("RGB"), top_k=1)[0]["label"])
else:
    import timm.data
    import torch

    transform = timm.data.create_transform(**data_config)
    with torch.no_grad():
        for image in images:
            logits = model(transform(Image.open(image).convert("RGB")).unsqueeze(0))
            labels.append(model.pretrained_cfg["label_names"][int(logits.argmax())])
print("TOP1 " + json.dumps(labels))
"""


def card_snippet(card: Path, folder: Path) -> str:
    """The card's first Python block under "How to use", loading ``folder`` instead of the Hub repository."""
    text = card.read_text()
    how_to_use = text[text.index("## How to use") :]
    code = re.search(r"```python\n(.*?)```", how_to_use, re.S).group(1)
    repo = re.search(r'"(?:hf-hub:)?([^"/\s]+/[^"\s]+)"', code).group(1)
    code = code.replace(f'"hf-hub:{repo}"', f'"local-dir:{folder}"').replace(f'"{repo}"', f'"{folder}"')
    return "\n".join(line for line in code.splitlines() if not line.startswith('classifier("'))  # its example call


def top1_outside(card: Path, folder: Path, images: list[Path], cwd: Path) -> tuple[str, list[str]]:
    """The card's snippet and the top-1 label of each image, from a process that cannot import accel_recipes."""
    snippet = card_snippet(card, folder)
    program = BLOCK_ACCEL_RECIPES + snippet + "\n" + PREDICT
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "hf-modules")}
    env.pop("PYTHONPATH", None)
    command = [sys.executable, "-c", program, json.dumps([str(image) for image in images])]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{snippet}\n{result.stderr[-4000:]}"
    line = next(line for line in result.stdout.splitlines() if line.startswith("TOP1 "))
    return snippet, json.loads(line[len("TOP1 ") :])


def top1_of_predict(command: list[str], folder: Path, images: list[Path], cwd: Path) -> list[str]:
    """The top-1 label of each image from the project's predict entry point (``command``: how to run it; the
    installed wheel's command in test_wheel.py)."""
    result = subprocess.run(
        [*command, *predict_args(folder, images)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return top1_of(result.stdout, images)


def top1_of_predict_in_process(folder: Path, images: list[Path]) -> list[str]:
    """The same as ``top1_of_predict`` from ``recipes/predict.py``'s ``main``, called in this process."""
    from accel_recipes import predict

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exit_code = predict.main(predict_args(folder, images))
    assert exit_code == 0, output.getvalue()[-4000:]
    return top1_of(output.getvalue(), images)


def predict_args(folder: Path, images: list[Path]) -> list[str]:
    return ["--model", str(folder), *map(str, images), "--json", "--top_k", "1"]


def top1_of(predict_json: str, images: list[Path]) -> list[str]:
    predictions = {Path(item["file"]).resolve(): item["predictions"][0]["label"] for item in json.loads(predict_json)}
    return [predictions[Path(image).resolve()] for image in images]
