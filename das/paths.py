"""Where das finds the optional real data (NB201 accuracies, CIFAR-10 arrays, teacher checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """$DAS_DATA if set, else ``../shared/data`` beside the repository."""
    env = os.environ.get("DAS_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
