"""A real write failure without root or a small file system: Linux's per-process file-size limit (RLIMIT_FSIZE).
A write past the limit fails in the kernel with EFBIG ("File too large"), as a write to a full disk fails with
ENOSPC, through every library's own writer; SIGXFSZ, which would otherwise kill the process, is ignored."""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Callable, Iterator


def limit_file_size(max_bytes: int) -> None:
    """From now on, in this process and the ones it starts, no file grows past ``max_bytes``."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def file_size_limit_for_children(max_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess``: the started command (and everything it starts) runs under the limit."""
    return lambda: limit_file_size(max_bytes)


@contextlib.contextmanager
def file_size_limit(max_bytes: int) -> Iterator[None]:
    """The limit in this process for the block only (the soft limit is lowered, then put back, as any process may)."""
    handler = signal.getsignal(signal.SIGXFSZ)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit_file_size(max_bytes)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
