"""Distil the searched student from the teacher, and compare it with the student trained alone.

    python train.py                                   # quickstart: the last search's best student
    python train.py --config configs/distill/cifar10_resnet56.yaml
    python train.py --ckpt_path last                  # resume an interrupted run
    python train.py --print_config                    # every option (LightningCLI)
    python train.py --tune.trials 20                  # first tune the recipe on the validation split

Settings come from the code's signatures, then one config file, then flags. The config file is
``configs/distill/quickstart.yaml`` only for a command that names no ``--config``, no dataset
and no teacher (as search.py); a ``--config`` replaces it (nothing is layered). A run writes
everything under one directory: ``--trainer.default_root_dir`` when given, else ``distill/``
next to the student's ``best_arch.json``; the baseline under its ``baseline/`` subfolder.
The command itself lives in das/distill/command.py, with the recipe study (the ``tune:``
section) in das/tune/command.py.
"""

from __future__ import annotations

import sys

from das.cli import guarded
from das.tune.command import main

if __name__ == "__main__":
    sys.exit(guarded(main))
