"""Push a run to the Hugging Face Hub: the model folder with its card at the repository root, the metrics beside it.

What a repository gets from ``push_run``: every file of ``model/`` (weights, config.json, README.md card,
learning_curves.png, config.yaml), ``all_results.json`` and ``metrics.jsonl``, and the TensorBoard event files
under ``runs/``, which the Hub shows as training metrics; all in one commit. ``BackgroundPusher`` (hub_strategy
``every_save``) sends each checkpoint's weights to ``last-checkpoint/`` as jobs on huggingface_hub's own background
worker (``HfApi.run_as_future``), so training never waits on the network.

The token is whatever huggingface_hub finds (``HF_TOKEN``, or ``hf auth login``'s stored one); it is never written
to a file, a log or a card, and it is removed from any error message. Without a token or a network the push
fails in seconds with a ``HubError`` that says what failed and the command that retries it; nothing on disk is
changed by a failed push.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from accel_recipes.card import check_run_folder, tensorboard_files, write_model_card
from accel_recipes.config import RecipeArguments
from accel_recipes.errors import HubError, RunFolderError, run_entry_point
from accel_recipes.hub_access import hub_offline, hub_reachable, offline_reason
from accel_recipes.results import RESULTS_FILE

logger = logging.getLogger(__name__)

DEFAULT_COMMIT_MESSAGE = "Upload image classifier trained with accel-recipes"
ROOT_FILES = (RESULTS_FILE, "metrics.jsonl", "config.yaml")
TENSORBOARD_PREFIX = "runs"
CHECKPOINT_PREFIX = "last-checkpoint"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def default_repo_id(hub_model_id: str | None, output_dir: str | Path) -> str:
    """``hub_model_id``, else the run folder's name (created in the namespace of the token's user)."""
    return hub_model_id or Path(output_dir).resolve().name


def push_problem(token: str | None = None) -> str | None:
    """Why a push cannot work right now (no token, offline, no network), found in seconds; None if it may."""
    from huggingface_hub import constants, get_token

    if not (token or get_token()):
        return "no Hugging Face token was found; log in with `hf auth login`, or set HF_TOKEN to a write token"
    if hub_offline():
        return f"{offline_reason()}; unset it to push"
    if not hub_reachable():
        return f"no network connection to the Hugging Face Hub ({constants.ENDPOINT} does not answer)"
    return None


def _describe(error: Exception, repo_id: str, token: str | None) -> str:
    """What failed, in words, without the token."""
    from huggingface_hub.errors import HfHubHTTPError

    status = getattr(getattr(error, "response", None), "status_code", None)
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, HfHubHTTPError) and status == 401:
        reason = "the Hub rejected the token (HTTP 401); log in again with `hf auth login` or set HF_TOKEN"
    elif isinstance(error, HfHubHTTPError) and status == 403:
        reason = (
            f"permission denied (HTTP 403): the token cannot write to '{repo_id}'; use a token with write access "
            "to that namespace"
        )
    elif isinstance(error, HfHubHTTPError) and status is not None:
        reason = f"the Hub answered HTTP {status}: {first_line}"
    else:
        reason = f"the upload failed ({type(error).__name__}: {first_line}); check the network connection"
    return reason.replace(token, "<token>") if token else reason


def _resolved_token(token: str | None) -> str | None:
    from huggingface_hub import get_token

    return token or get_token()


def upload_plan(output_dir: str | Path) -> dict[str, Path]:
    """``{path in the repository: local file}`` of what ``push_run`` uploads."""
    folder = Path(output_dir)
    plan: dict[str, Path] = {}
    for file in sorted((folder / "model").rglob("*")):
        relative = file.relative_to(folder / "model")
        if file.is_file() and not any(part.startswith(".") for part in relative.parts):
            plan[relative.as_posix()] = file
    for name in ROOT_FILES:
        if (folder / name).is_file():
            plan.setdefault(name, folder / name)
    for file in tensorboard_files(folder):
        plan[f"{TENSORBOARD_PREFIX}/{file.relative_to(folder).as_posix()}"] = file
    return plan


def push_run(
    output_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Render the card for ``repo_id`` and upload the run in one commit; returns the repository's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = check_run_folder(output_dir)
    problem = push_problem(token)
    if problem:
        raise HubError(problem, output_dir, repo_id, private)
    resolved = _resolved_token(token)
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private or None, exist_ok=True)
    except Exception as error:  # the network boundary: every failure becomes one clear HubError
        raise HubError(_describe(error, repo_id, resolved), output_dir, repo_id, private) from None
    full_id = getattr(repo_url, "repo_id", None) or repo_id  # 'name' alone lands in the user's namespace
    write_model_card(folder, full_id)
    operations = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(file)) for path, file in upload_plan(folder).items()
    ]
    try:
        api.create_commit(full_id, operations, commit_message=commit_message)
    except Exception as error:
        raise HubError(_describe(error, repo_id, resolved), output_dir, repo_id, private) from None
    return str(repo_url)


# ---- hub_strategy every_save ----------------------------------------------------------------------------------


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link survives checkpoint rotation deleting the source; copy where links are not possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _strip_wrapper_prefixes(file: Path) -> None:
    """accelerate saves the state of the prepared model; drop DDP/compile prefixes so the keys are the model's."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(file), framework="pt") as handle:
        keys = list(handle.keys())
    if not any(key.startswith(WRAPPER_PREFIXES) for key in keys):
        return
    state = load_file(str(file))
    for prefix in WRAPPER_PREFIXES:
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    file.unlink()  # a hard link: write a new file rather than through the link into the checkpoint
    save_file(state, str(file), metadata={"format": "pt"})


@dataclass
class _Upload:
    """One checkpoint handed to huggingface_hub's background worker: its staging folder and its future."""

    name: str
    staging: Path
    future: Future | None = None
    drop_reason: str = ""
    drop_level: int = logging.WARNING
    settled: threading.Event = field(default_factory=threading.Event)  # reported and staging removed


class BackgroundPusher:
    """Pushes each checkpoint's model weights (plus metrics so far) to ``last-checkpoint/`` in the background.

    Each push is a job on huggingface_hub's own background worker (``HfApi.run_as_future``: one thread, jobs run
    in order). ``submit`` only links files into a hidden staging folder and hands the job over, so training never
    waits on the network. One checkpoint waits at most: a newer one cancels a checkpoint not yet started. Every
    checkpoint ends in ``pushed``, ``failures`` (logged with the retry command, never raised) or ``dropped``
    (superseded, or still waiting when the pusher closed), and its staging folder is removed once its future
    completes.
    """

    def __init__(self, output_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None):
        from huggingface_hub import HfApi

        self.output_dir = Path(output_dir)
        self.repo_id = repo_id
        self.private = private
        self.token = token
        self.pushed: list[str] = []
        self.failures: list[str] = []
        self.dropped: list[str] = []
        self._api = HfApi(token=token)  # token None: huggingface_hub finds it at each request; kept in memory only
        self._uploads: list[_Upload] = []  # submitted and not yet settled, oldest first
        self._lock = threading.RLock()  # RLock: Future.cancel runs _settle at once, on the thread that cancels
        self._closed = False
        self._repo_ready = False

    def submit(self, checkpoint: str | Path) -> None:
        """Queue ``checkpoint`` (a folder written by ``accelerator.save_state``); returns at once."""
        checkpoint = Path(checkpoint)
        if self._closed:
            self._report_dropped(checkpoint.name, "the pusher was already closed")
            return
        staging = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=".hub-push-", dir=self.output_dir))
            self._stage(checkpoint, staging)
        except OSError as error:  # e.g. a full disk: the checkpoint itself is untouched
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            self._report_failure(checkpoint.name, f"staging its files failed ({type(error).__name__}: {error})")
            return
        upload = _Upload(checkpoint.name, staging)
        with self._lock:
            if self._closed:
                shutil.rmtree(staging, ignore_errors=True)
                self._report_dropped(upload.name, "the pusher was already closed")
                return
            for waiting in self._uploads:  # newest wins: the one not yet started is not pushed
                self._cancel(waiting, f"{upload.name} supersedes it", logging.INFO)  # by design: not a warning
            try:
                upload.future = self._api.run_as_future(self._push, upload.name, staging)
            except RuntimeError as error:  # the interpreter is shutting down: no new jobs
                shutil.rmtree(staging, ignore_errors=True)
                self._report_dropped(upload.name, str(error))
                return
            self._uploads.append(upload)
        upload.future.add_done_callback(lambda future: self._settle(upload, future))

    def close(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop taking checkpoints; with ``wait``, finish the push under way and the one queued (for at most
        ``timeout`` seconds). Without ``wait``, or once ``timeout`` has passed, a checkpoint still queued is dropped
        (and reported) while the push under way finishes in the background. True when every push has settled."""
        with self._lock:
            self._closed = True
            uploads = list(self._uploads)
        if not wait:
            for upload in uploads:
                self._cancel(upload, "training stopped before its push started")
            return all(upload.settled.is_set() for upload in uploads)
        deadline = None if timeout is None else time.monotonic() + timeout
        for upload in uploads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not upload.settled.wait(left):
                break
        unsettled = [upload for upload in uploads if not upload.settled.is_set()]
        for upload in unsettled:
            self._cancel(upload, f"it had not started after {timeout}s")
        under_way = [upload.name for upload in unsettled if not upload.settled.is_set()]
        if under_way:
            logger.warning(
                "still pushing %s to %s after %ss; it goes on in the background",
                ", ".join(under_way),
                self.repo_id,
                timeout,
            )
        return not under_way

    def _cancel(self, upload: _Upload, reason: str, level: int = logging.WARNING) -> None:
        """Cancel ``upload`` if it has not started; its done callback then reports it and removes its staging."""
        upload.drop_reason, upload.drop_level = reason, level
        if upload.future is not None:
            upload.future.cancel()  # False (and nothing happens) once it runs

    def _settle(self, upload: _Upload, future: Future) -> None:
        """The done callback of each future: report its result or exception, then remove its staging folder."""
        try:
            if future.cancelled():
                self._report_dropped(upload.name, upload.drop_reason, upload.drop_level)
            elif future.exception() is None:
                self.pushed.append(upload.name)
                logger.info("pushed %s to the Hub repository %s", upload.name, self.repo_id)
            else:
                error = future.exception()
                if isinstance(error, HubError):
                    reason = error.reason
                else:  # raised outside the network boundary: still said without the token
                    reason = _describe(error, self.repo_id, _resolved_token(self.token))
                self._report_failure(upload.name, reason)
        finally:
            shutil.rmtree(upload.staging, ignore_errors=True)
            with self._lock:
                if upload in self._uploads:
                    self._uploads.remove(upload)
            upload.settled.set()

    def _report_failure(self, name: str, reason: str) -> None:
        self.failures.append(name)
        retry = HubError(reason, self.output_dir, self.repo_id, self.private).retry_command
        logger.warning(
            "could not push %s to %s (training goes on; the next checkpoint is pushed as usual): %s. Nothing on "
            "disk changed; once the run finishes, push it with: %s",
            name,
            self.repo_id,
            reason,
            retry,
        )

    def _report_dropped(self, name: str, reason: str, level: int = logging.WARNING) -> None:
        self.dropped.append(name)
        logger.log(level, "did not push %s to %s: %s", name, self.repo_id, reason)

    def _stage(self, checkpoint: Path, staging: Path) -> None:
        """Hard links (or copies) in ``staging``, so rotation cannot delete a file mid-upload."""
        for file in checkpoint.glob("*.safetensors"):
            _link_or_copy(file, staging / CHECKPOINT_PREFIX / file.name)
        if (checkpoint / "training_state.json").is_file():
            shutil.copy2(checkpoint / "training_state.json", staging / CHECKPOINT_PREFIX / "training_state.json")
        for name in ROOT_FILES:  # small, and metrics.jsonl grows: a copy is a consistent snapshot
            if (self.output_dir / name).is_file():
                shutil.copy2(self.output_dir / name, staging / name)
        for file in tensorboard_files(self.output_dir):
            target = staging / TENSORBOARD_PREFIX / file.relative_to(self.output_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)

    def _push(self, name: str, staging: Path) -> None:
        """The job, on huggingface_hub's worker thread: every call in it is synchronous (a future waited on from
        the single worker would never run)."""
        problem = push_problem(self.token)
        if problem:
            raise HubError(problem, self.output_dir, self.repo_id, self.private)
        try:
            for file in (staging / CHECKPOINT_PREFIX).glob("*.safetensors"):
                _strip_wrapper_prefixes(file)
            if not self._repo_ready:
                repo_url = self._api.create_repo(self.repo_id, private=self.private or None, exist_ok=True)
                self.repo_id = getattr(repo_url, "repo_id", None) or self.repo_id
                self._repo_ready = True
            self._api.upload_folder(
                repo_id=self.repo_id, folder_path=staging, commit_message=f"Training in progress: {name}"
            )
        except Exception as error:  # the network boundary: one clear HubError, without the token
            reason = _describe(error, self.repo_id, _resolved_token(self.token))
            raise HubError(reason, self.output_dir, self.repo_id, self.private) from None


@contextmanager
def checkpoint_pusher(args: RecipeArguments, is_main_process: bool) -> Iterator[Callable[[Path], None] | None]:
    """For ``train``: warn now if the push at the end cannot work, and with hub_strategy every_save give the
    ``on_checkpoint`` callback of ``fit``; on leaving, wait for the checkpoint pushes (on an error, drop the one not
    yet started and leave the one under way to finish in the background)."""
    if not (args.hub.push_to_hub and is_main_process):
        yield None
        return
    problem = push_problem()
    if problem:
        print(f"warning: push_to_hub is set but pushing cannot work now: {problem}; training goes on", file=sys.stderr)
    if args.hub.hub_strategy != "every_save":
        yield None
        return
    repo_id = default_repo_id(args.hub.hub_model_id, args.training.output_dir)
    pusher = BackgroundPusher(args.training.output_dir, repo_id, private=args.hub.hub_private_repo)
    finished = False
    try:
        yield pusher.submit
        finished = True
    finally:
        pusher.close(wait=finished)


# ---- recipes/push.py ------------------------------------------------------------------------------------------


def push_main(argv: list[str] | None = None) -> int:
    """Exit status: 0 pushed, 2 not a run folder, 3 the push failed (the message says why and how to retry)."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(description="Push a finished run (model folder, card, metrics) to the Hub.")
    parser.add_argument("output_dir", help="the run folder recipes/train.py wrote (e.g. runs/cifar10-resnet50)")
    parser.add_argument("--hub_model_id", help="repository id, e.g. me/cifar10-resnet50 (default: the run's)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--commit_message", default=DEFAULT_COMMIT_MESSAGE)
    args = parser.parse_args(argv)

    def push() -> None:
        folder = check_run_folder(args.output_dir)
        try:
            recorded = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        except yaml.YAMLError as error:
            raise RunFolderError(f"'{folder / 'config.yaml'}' is not valid YAML ({error})") from None
        repo_id = default_repo_id(args.hub_model_id or recorded.get("hub_model_id"), folder)
        private = args.private or bool(recorded.get("hub_private_repo"))
        url = push_run(folder, repo_id, private=private, commit_message=args.commit_message)
        print(f"pushed {folder} to {url}")

    return run_entry_point(push)
