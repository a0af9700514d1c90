"""Top-k predictions of an exported model on image files, with exactly the preprocessing of evaluation.

The model comes from a model folder (``runs/x/model``) or a Hub id (downloaded with ``snapshot_download``: JSON
and safetensors files only, so nothing downloaded is ever unpickled, and no remote code runs). Each image goes
through the evaluation transform of training (``make_transform(train=False)``: RGB, resize to the recorded input
size with the recorded interpolation) and the engine's ``Normalizer`` (recorded mean and std), so a prediction
here is what evaluation computed. Files that cannot be read as images are reported by name and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from accel_recipes.data import DataError, make_transform
from accel_recipes.data.sources import IMAGE_EXTENSIONS
from accel_recipes.data.transforms import decode_image, to_rgb
from accel_recipes.errors import EXIT_FAILED, PredictError, run_entry_point
from accel_recipes.hub_access import hub_offline, hub_reachable, offline_reason
from accel_recipes.models import ModelError, logits_of
from accel_recipes.models.folder import load_model_folder
from accel_recipes.models.preprocess import Normalizer
from accel_recipes.models.resolve import is_hub_repo_id

DOWNLOADED_FILES = ["*.json", "*.safetensors"]  # config, image processor, weights: never a pickle


@dataclass
class Prediction:
    file: str
    top: list[tuple[str, float]]  # (label, probability), best first

    def to_dict(self) -> dict:
        return {"file": self.file, "predictions": [{"label": label, "score": score} for label, score in self.top]}


def resolve_model(model: str, cache_dir: str | None = None) -> Path:
    """The local folder of ``model``: the folder itself, or the Hub repository downloaded into the cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not is_hub_repo_id(model):
        raise PredictError(
            f"model '{model}' is neither a model folder nor a Hub id (namespace/name); pass --model with the "
            "model/ folder of a run (runs/<name>/model) or a Hub repository id"
        )
    return _download(model, cache_dir)


def _download(repo_id: str, cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    reason = offline_reason() if hub_offline() else None if hub_reachable() else "no network connection"
    try:
        folder = snapshot_download(
            repo_id, allow_patterns=DOWNLOADED_FILES, cache_dir=cache_dir, local_files_only=reason is not None
        )
    except RepositoryNotFoundError:
        raise PredictError(
            f"the Hub has no model repository '{repo_id}' that this account can see; check the id, or log in with "
            "`hf auth login` for a private repository"
        ) from None
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise PredictError(
            f"cannot download '{repo_id}': the Hugging Face Hub is unreachable ({reason}) and the local cache has "
            "no copy; pass --model with a local model folder"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PredictError(f"cannot download '{repo_id}' from the Hub: {first_line}") from None
    return Path(folder)


class Predictor:
    """A loaded model with the evaluation preprocessing of its training run."""

    def __init__(self, folder: str | Path, device: str | None = None) -> None:
        try:
            self.model, info = load_model_folder(folder)
        except ModelError as error:
            raise PredictError(str(error)) from None
        if not info.get("input_size") or len(info.get("mean", ())) != 3 or len(info.get("std", ())) != 3:
            raise PredictError(
                f"model folder '{folder}' does not record its input size, mean and std; export it with "
                "accel_recipes.models.save_model_folder"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.labels = list(info["label_names"]) or [str(index) for index in range(self._num_outputs())]
        size = int(info["input_size"])
        self.transform = make_transform(False, "none", size, size, 0, info["interpolation"])
        self.normalizer = Normalizer(info["mean"], info["std"]).to(self.device)

    def _num_outputs(self) -> int:
        config = getattr(self.model, "config", None)
        return getattr(config, "num_labels", None) or getattr(self.model, "num_classes", 0)

    @torch.inference_mode()
    def probabilities(self, images: list[Image.Image]) -> torch.Tensor:
        """Softmax over the classes for each image, as evaluation computes the logits."""
        batch = torch.stack([self.transform(image) for image in images]).to(self.device)
        return logits_of(self.model(self.normalizer(batch))).float().softmax(dim=-1).cpu()

    def top_k(self, images: list[Image.Image], k: int) -> list[list[tuple[str, float]]]:
        scores, indices = self.probabilities(images).topk(min(k, len(self.labels)), dim=-1)
        return [
            [(self.labels[index], round(float(score), 6)) for score, index in zip(row_scores, row_indices, strict=True)]
            for row_scores, row_indices in zip(scores.tolist(), indices.tolist(), strict=True)
        ]


def image_files(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named, plus the images (by extension) inside folders, recursively; and what could not be found."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            files.extend(found)
            if not found:
                problems.append((str(path), f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the folder"))
        elif path.is_file():
            files.append(path)
        else:
            problems.append((str(path), "no such file or folder"))
    return files, problems


def read_image(path: Path) -> Image.Image:
    """The image as training decodes it (16-bit scaled to 8, PIL's pixel limit); a DataError when unreadable."""
    return to_rgb(decode_image({"path": str(path), "bytes": None}))


def _batches(files: list[Path], size: int, failed: list[tuple[str, str]]) -> Iterator[tuple[list[Path], list]]:
    paths: list[Path] = []
    images: list[Image.Image] = []
    for path in files:
        try:
            images.append(read_image(path))
            paths.append(path)
        except DataError as error:
            failed.append((str(path), f"not a readable image ({error})"))
        if len(images) == size:
            yield paths, images
            paths, images = [], []
    if images:
        yield paths, images


def predict_files(
    predictor: Predictor, files: list[Path], k: int = 5, batch_size: int = 32
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Top-k predictions of every readable image, and (file, reason) for each one that is not."""
    failed: list[tuple[str, str]] = []
    predictions = []
    for paths, images in _batches(files, batch_size, failed):
        for path, top in zip(paths, predictor.top_k(images, k), strict=True):
            predictions.append(Prediction(str(path), top))
    return predictions, failed


def format_table(predictions: list[Prediction]) -> str:
    rows = [("file", "rank", "label", "score")]
    for prediction in predictions:
        for rank, (label, score) in enumerate(prediction.top, start=1):
            rows.append((prediction.file if rank == 1 else "", str(rank), label, f"{score:.4f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Top-k labels of images from an exported model or a Hub repository.")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images (searched recursively)")
    parser.add_argument("--model", required=True, help="a run's model folder (runs/x/model) or a Hub id (me/repo)")
    parser.add_argument("--top_k", type=int, default=5, help="labels shown per image (default: 5)")
    parser.add_argument("--batch_size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--cache_dir", default=None, help="where Hub downloads are cached")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when at least one image was predicted, 1 when none was, 2 for a model that cannot load."""
    args = _parser().parse_args(argv)
    return run_entry_point(lambda: _predict(args))


def _predict(args: argparse.Namespace) -> int:
    if args.top_k < 1 or args.batch_size < 1:
        raise PredictError("--top_k and --batch_size must be at least 1")
    predictor = Predictor(resolve_model(args.model, args.cache_dir), args.device)
    files, problems = image_files(args.inputs)
    predictions, failed = predict_files(predictor, files, args.top_k, args.batch_size)
    for file, reason in [*problems, *failed]:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([prediction.to_dict() for prediction in predictions], indent=2))
    elif predictions:
        print(format_table(predictions))
    if not predictions:
        print("error: no image could be predicted", file=sys.stderr)
        return EXIT_FAILED
    return 0
