"""Why does DisWOT rank NAS-Bench-201 students against their accuracy? An ablation of the BN mode.

das scores every student in train mode (BatchNorm normalises with the probe batch's own
statistics), as zero-cost proxy papers do. DisWOT's semantic term reads the classifier gradient,
and batch statistics at initialisation change that gradient a lot. This script scores DisWOT and
its two terms on a prefix of the correlation benchmark's sample twice: as das does, and with the
student's BatchNorm in eval mode (running statistics, which at initialisation are mean 0,
variance 1), and reports Spearman ρ with CIFAR-10 test accuracy and with the parameter count.
It is a diagnostic for the README's DisWOT finding, not a proxy: das's ``diswot`` is unchanged.

    python benchmarks/diswot_bn_mode.py --num-archs 200 --out benchmarks/results/diswot_bn_mode.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn
from tqdm import tqdm

from das.cli import guarded
from das.errors import DasError
from das.paths import shared_data_dir
from das.proxies import score
from das.report.bench import code_version, load_probe, machine_info, now_iso, set_threads, teacher_reference, write_json
from das.report.ranking import rank_correlation
from das.spaces import create_space
from das.stats import count_params

from benchmarks.nb201_correlation import read_accuracy_csv, sample_rows  # the same seeded sample

TERMS = ["diswot", "diswot_relation", "diswot_semantic"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--accuracy-csv", default=str(data / "nb201" / "nb201_accuracy.csv"), help="NB201 accuracy table")
    p.add_argument("--data", default=str(data / "cifar10" / "train_jpeg.npz"), help=".npz the probe batch is drawn from")
    p.add_argument("--num-archs", type=int, default=200, help="first N of the correlation benchmark's seeded sample")
    p.add_argument("--seed", type=int, default=0, help="the correlation benchmark's seed")
    p.add_argument("--teacher", default="resnet56", help="teacher spec")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the teacher's weights")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/results/diswot_bn_mode.json", help="result JSON")
    return p.parse_args(list(argv))


class EvalModeBN(nn.Module):
    """Wraps a student so that scoring's ``train()`` leaves its BatchNorm layers in eval mode."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def train(self, mode: bool = True) -> EvalModeBN:
        super().train(mode)
        for m in self.student.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def feature_points(self):
        from dataclasses import replace

        return [replace(p, module=f"student.{p.module}") for p in self.student.feature_points()]


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.num_archs < 2:
        raise DasError(f"--num-archs {args.num_archs} must be at least 2 to rank")
    threads = set_threads(args.threads)
    rows = sample_rows(read_accuracy_csv(args.accuracy_csv), args.num_archs, args.seed)
    batches = load_probe(args.data, 64, 1, args.seed)
    teacher = teacher_reference(args.teacher, args.teacher_checkpoint, batches[0], 10)
    space = create_space("nb201", C=16, N=5)
    scores: dict[str, list[dict[str, float]]] = {"train_mode_bn": [], "eval_mode_bn": []}
    params = []
    for r in tqdm(rows, desc="diswot", unit="arch"):
        for mode in scores:
            torch.manual_seed(args.seed)
            model = space.spec(arch=r["arch"]).build(10)
            if mode == "train_mode_bn":
                params.append(count_params(model))
            else:
                model = EvalModeBN(model)
            scores[mode].append(score(model, batches, TERMS, teacher=teacher, seed=args.seed))
    accuracy = [r["cifar10_test_acc"] for r in rows]
    results = {
        mode: {t: {"vs_cifar10_test_acc": rank_correlation([s[t] for s in values], accuracy),
                   "vs_params": rank_correlation([s[t] for s in values], params)} for t in TERMS}
        for mode, values in scores.items()
    }
    write_json(args.out, {"benchmark": "diswot_bn_mode", "archs": len(rows), "results": results,
                          "settings": {"seed": args.seed, "threads": threads, "teacher": args.teacher, "date": now_iso(),
                                       "machine": machine_info(), "code": code_version()}})
    print(f"{len(rows)} archs; Spearman ρ with CIFAR-10 accuracy (with params):")
    for mode, res in results.items():
        print(f"  {mode:14s} " + "  ".join(f"{t} {res[t]['vs_cifar10_test_acc']['spearman']:+.3f} ({res[t]['vs_params']['spearman']:+.3f})" for t in TERMS))
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
