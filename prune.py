"""Prune a student, then train it: masks at initialisation (PX, SNIP, SynFlow, ...) or BatchNorm-scale channel slimming.

    python prune.py                                          # quickstart: PX at 10% density on the digits, distilled
    python prune.py --prune.method slim                      # quickstart: slim the digits teacher by half, distil it
    python prune.py --config configs/prune/cifar10_resnet20_px.yaml
    python prune.py --config configs/prune/cifar10_resnet56_slim.yaml
    python prune.py --prune.method snip --prune.density 0.05 # the at-init quickstart with another method
    python prune.py --ckpt_path last                         # resume an interrupted run where it stopped
    python prune.py --print_config                           # every option (LightningCLI)

The ``model``, ``data`` and ``trainer`` options are train.py's; ``prune`` says what is pruned
(das/prune/config.py). A run writes everything under one directory (``--trainer.default_root_dir``,
else ``runs/prune-<method>``): the trained student (``student.pt``, ``.json``, ``.onnx``),
``prune_results.json`` (sparsity per layer, params and FLOPs, accuracy before and after
training), ``masks.pt`` or ``pruned.pt``, Lightning's checkpoints and logs. Exit status: 0 done,
1 a mistake in the command or its config (one line; --debug for a traceback), 130 interrupted
(the stages finished are kept; ``--ckpt_path last`` resumes). The command lives in
das/prune/command.py.
"""

from __future__ import annotations

import sys

from das.cli import guarded
from das.prune.command import main

if __name__ == "__main__":
    sys.exit(guarded(main))
