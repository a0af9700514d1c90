"""A view of this interpreter's site-packages with some distributions left out, as a machine that never had them
sees it: a folder of symlinks to every other entry (fast: no copy, no venv, no network). Put it on a Python's path
(``PYTHONPATH`` with ``python -S``, or a venv's ``.pth``): its own ``.pth`` files are not processed there, so an
editable install's finder does not come along."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def lent_site_packages() -> list[Path]:
    """The site-packages folders this interpreter imports its dependencies from."""
    return [Path(path) for path in sys.path if path.endswith("site-packages") and Path(path).is_dir()]


def site_packages_without(hidden: list[str], root: Path) -> list[Path]:
    """A folder per site-packages under ``root``, holding everything but ``hidden`` (import names, which are also
    their distribution names here: ``datasets``, ``accel_recipes``) and its metadata, and but any ``.pth`` file."""
    names = "|".join(re.escape(name) for name in hidden)
    left_out = re.compile(rf"^(?:__editable__[._])?(?:{names})(?:[-_.].*)?$|\.pth$", re.IGNORECASE)
    views = []
    for index, site in enumerate(lent_site_packages()):
        view = root / f"site-{index}"
        view.mkdir(parents=True)
        for entry in site.iterdir():
            if not left_out.search(entry.name):
                (view / entry.name).symlink_to(entry)
        views.append(view)
    return views
