"""Hub downloads that fail fast: the Hub is asked only for what is not local or cached, and when it cannot be
reached (no network, ``HF_HUB_OFFLINE=1``) the build fails at once with a ``ModelError`` saying what to do,
instead of after half a minute of the client's retries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from accel_recipes.errors import ModelError
from accel_recipes.hub_access import hub_unreachable_reason

T = TypeVar("T")


def unreachable_error(name: str, what: str, reason: str) -> ModelError:
    """The error for ``what`` (e.g. 'the pretrained weights') of model ``name`` that only the Hub could give."""
    return ModelError(
        f"cannot get {what} of '{name}': the Hugging Face Hub is unreachable ({reason}) and the local cache "
        "has no copy; point model_name_or_path at a local folder holding config.json and the weights, "
        "or set pretrained false to train from scratch"
    )


def hub_file(repo_id: str, filenames: Sequence[str], cache_dir: str | None, name: str, what: str) -> str:
    """Local path of the first of ``filenames`` in a Hub repo: from the cache, else downloaded."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    reason = hub_unreachable_reason()
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=reason is not None)
        except LocalEntryNotFoundError as error:
            if reason is None:  # online, yet the download failed: a network problem, not a missing file
                raise unreachable_error(name, what, str(error).splitlines()[0]) from None
        except EntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError, ValueError) as error:
            raise ModelError(f"cannot get {what} of '{name}' from the Hub repo '{repo_id}': {error}") from None
    if reason is not None:
        raise unreachable_error(name, what, reason)
    raise ModelError(f"Hub repo '{repo_id}' holds none of {list(filenames)}, so it has no {what} for '{name}'")


def transformers_local_only(name: str, cache_dir: str | None, what: str) -> bool:
    """True when the Hub is unreachable but the config is cached (load from the cache only); raise if not cached."""
    from huggingface_hub import try_to_load_from_cache

    reason = hub_unreachable_reason()
    if reason is None:
        return False
    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
    except ValueError as error:  # an invalid repo id
        raise ModelError(f"'{name}' is neither a local folder nor a valid Hub id ({error})") from None
    if isinstance(cached, str):
        return True
    raise unreachable_error(name, what, reason)


def call_hub(name: str, what: str, load: Callable[[], T]) -> T:
    """Run a transformers loader; its OSError (not found, no network) or ValueError (unknown model type,
    remote code not trusted) becomes a ModelError naming the model."""
    try:
        return load()
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load {what} of '{name}': {error}") from None
