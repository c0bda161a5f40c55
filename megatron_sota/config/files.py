"""Where the shipped Hydra configs live: `megatron_sota/conf/`, found through importlib.resources.

It works the same from a checkout, an editable install and a wheel; it must not look at the working directory.
"""

from __future__ import annotations

import os
from importlib import resources

from megatron_sota.errors import MegatronSotaError


def conf_dir(*parts: str) -> str:
    """The path of `megatron_sota/conf/<parts...>` on disk (Hydra and OmegaConf read real files)."""
    root = resources.files("megatron_sota").joinpath("conf")
    if not isinstance(root, os.PathLike) or not os.path.isdir(root):
        raise MegatronSotaError(
            f"the package's configs are missing: expected the directory {root} "
            "(installed as package data of megatron_sota; reinstall from a wheel or a source tree)"
        )
    return os.path.join(os.fspath(root), *parts)
