"""Throughput on whatever device is present: one distillation training step, and search scoring.

Issue "Real datasets and accelerators", item 3. For each case, on random weights and random
images (speed does not depend on them):

- **distillation step**, images per second: the teacher's forward (frozen, no gradient), the
  student's forward and backward and the optimiser step on train.py's default objective (CE ½ +
  KD ½ at T = 4 + the cosine loss on every stage pair through DistillModule's projectors), by
  das (``DistillModule.compute_losses``, the step train.py runs inside Lightning) and by a
  **plain PyTorch loop** doing the same step with hooks and the same losses written out (the
  floor); ``ratio`` = das / plain;
- **search scoring**, architectures per second: the search's default objective (``size_first``)
  and its default reports (DisWOT and its two terms) on one probe batch, over members of a space
  (the first ``--archs`` of a seeded draw).

Cases: ``a`` ResNet-56 → ResNet-20 at 32×32, batch 128 (scoring: ``resnet_cifar`` members);
``b`` timm ResNet-50 → ResNet-18 at 224×224, batch 64, 1,000 classes (scoring: the ``timm``
space's resnet members). Modes: ``--amp`` off / bf16 / fp16 (fp16 only on CUDA, with a gradient
scaler) and ``--compile`` (``torch.compile`` of the student and teacher). Each measurement runs
``--warmup`` steps, then ``--steps`` timed steps; das and the plain loop alternate, twice each, so
a machine's drift hits both. It runs unchanged on a GPU (``--device auto`` takes CUDA when
present) and names the device in its results.

    python -m benchmarks.throughput --out benchmarks/results/throughput_cpu.json
    python -m benchmarks.throughput --cases a --amp off,bf16 --compile off   # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F

from benchmarks.common import code_version, machine_info, now_iso, set_threads, write_json
from das.cli import guarded
from das.distill.module import DistillModule
from das.distill.losses import match_spatial
from das.errors import DasError
from das.models import build_model
from das.proxies import DisWOTReference, score
from das.spaces import create_space

CASES: dict[str, dict[str, Any]] = {
    "a": {"teacher": "resnet56", "student": "resnet20", "size": 32, "batch": 128, "classes": 10,
          "space": ("resnet_cifar", {}), "name": "ResNet-56 -> ResNet-20, 32x32, batch 128"},
    "b": {"teacher": "timm:resnet50", "student": "timm:resnet18", "size": 224, "batch": 64, "classes": 1000,
          "space": ("timm", {"family": "resnet"}), "name": "timm ResNet-50 -> ResNet-18, 224x224, batch 64"},
}
AMP = ("off", "bf16", "fp16")
SCORED = ["size_first", "diswot", "diswot_relation", "diswot_semantic"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cases", default="a,b", help="comma list of " + ", ".join(f"{k} ({v['name']})" for k, v in CASES.items()))
    p.add_argument("--amp", default="off,bf16", help="comma list of off, bf16, fp16 (fp16: CUDA only)")
    p.add_argument("--compile", default="off", help="off, on, or off,on")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator, caches)")
    p.add_argument("--archs", type=int, default=8, help="architectures scored per scoring measurement")
    p.add_argument("--batch", type=int, default=0, help="override every case's batch size (0: the case's; tests use it)")
    p.add_argument("--size", type=int, default=0, help="override every case's image side (0: the case's; tests use it)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results/throughput.json", help="summary JSON")
    return p.parse_args(list(argv))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DasError(f"--device {name!r} is not a torch device; give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DasError(f"--device {name} but no CUDA device is present; give cpu or auto")
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def autocast(device: torch.device, amp: str):
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# --------------------------------------------------------------------------- one training step, two ways


def das_loss(module: DistillModule) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """train.py's objective on one batch, as DistillModule computes it inside Lightning."""
    return lambda x, y: module.compute_losses(x, y)[1].total


def plain_loss(module: DistillModule, ce: float = 0.5, kd: float = 0.5, temperature: float = 4.0,
               cosine: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The same objective written out: CE ``ce`` + KD ``kd`` (at ``temperature``) + the cosine loss ``cosine``.

    The defaults are train.py's (CE ½ + KD ½ at T = 4 + the cosine loss at scale 1, through forward
    hooks on the paired modules); with ``cosine=0`` no hook is registered, so the floor of a logits-only
    KD step (torchdistill_compare) pays for no feature maps either.
    """
    student, teacher, pairs, projectors = module.student, module.teacher, module.pairs, module.projectors
    s_maps: dict[str, torch.Tensor] = {}
    t_maps: dict[str, torch.Tensor] = {}

    def keeper(store: dict[str, torch.Tensor], name: str):
        def hook(_m, _i, out):
            store[name] = out
        return hook

    s_modules, t_modules = dict(student.named_modules()), dict(teacher.named_modules())
    for p in pairs if cosine else []:
        s_modules[p.student.module].register_forward_hook(keeper(s_maps, p.student.module))
        t_modules[p.teacher.module].register_forward_hook(keeper(t_maps, p.teacher.module))

    run_teacher, run_student = module.forward_of(teacher), module.forward_of(student)  # compiled with --compile, as das's

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = run_teacher(x)
        logits = run_student(x)
        soft = F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(t_logits / temperature, 1), reduction="batchmean",
                        log_target=True) * temperature**2
        total = ce * F.cross_entropy(logits, y) + kd * soft
        if not cosine:
            return total
        feature = logits.new_zeros(())
        for proj, p in zip(projectors.projectors, pairs):  # pool first, then project, as FeatureProjectors does
            s, t = match_spatial(s_maps[p.student.module], t_maps[p.teacher.module])
            feature = feature + (1.0 - F.cosine_similarity(proj(s), t, dim=1, eps=1e-8)).mean()
        return total + cosine * feature / max(len(pairs), 1)
    return loss


def training_step(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                  device: torch.device, amp: str, scaler: torch.amp.GradScaler | None) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Forward under ``amp``, backward, optimiser step."""
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(device, amp):
            loss = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        _backward_step(loss, optimizer, scaler)
    return step


def _backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def timed(step: Callable[[torch.Tensor, torch.Tensor], None], x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int,
          device: torch.device) -> float:
    """Images per second over ``steps`` steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * x.shape[0] / (time.perf_counter() - started)


def measure_training(case: dict[str, Any], device: torch.device, amp: str, compiled: bool, args: argparse.Namespace) -> dict[str, Any]:
    size, batch = args.size or case["size"], args.batch or case["batch"]
    torch.manual_seed(0)
    module = DistillModule(case["student"], teacher=case["teacher"], num_classes=case["classes"], input_size=(3, size, size),
                           compile=compiled).to(device)
    module.train()
    optimizer = torch.optim.SGD([*module.student.parameters(), *module.projectors.parameters()], lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, case["classes"], (batch,), device=device)
    rates: dict[str, list[float]] = {"das": [], "plain": []}
    steps = {"das": training_step(das_loss(module), optimizer, device, amp, scaler),
             "plain": training_step(plain_loss(module), optimizer, device, amp, scaler)}
    for _ in range(2):  # alternate, so drift hits both
        for name, step in steps.items():
            rates[name].append(timed(step, x, y, args.steps, args.warmup, device))
    das, plain = max(rates["das"]), max(rates["plain"])
    return {"amp": amp, "compile": compiled, "batch": batch, "size": size, "das_images_per_s": das, "plain_images_per_s": plain,
            "ratio": das / plain, "runs": rates}


def measure_scoring(case: dict[str, Any], device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    size, batch = args.size or case["size"], args.batch or case["batch"]
    name, space_args = case["space"]
    space = create_space(name, **space_args)
    teacher = build_model(case["teacher"], case["classes"]).to(device).eval()
    probe = (torch.randn(batch, 3, size, size, device=device), torch.randint(0, case["classes"], (batch,), device=device))
    reference = DisWOTReference.from_teacher(teacher, probe, seed=0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    specs = [space.suggest(study.ask()) for _ in range(args.archs)]
    started = time.perf_counter()
    for spec in specs:
        torch.manual_seed(0)
        score(spec.build(case["classes"]).to(device), [probe], SCORED, teacher=reference, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {"space": name, "space_args": space_args, "proxies": SCORED, "archs": len(specs), "seconds": seconds,
            "archs_per_s": len(specs) / seconds}


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    amps = [a.strip() for a in args.amp.split(",") if a.strip()]
    compiles = [c.strip() for c in args.compile.split(",") if c.strip()]
    if bad := [c for c in cases if c not in CASES]:
        raise DasError(f"--cases {bad} are not cases; choose from {', '.join(CASES)}")
    if bad := [a for a in amps if a not in AMP]:
        raise DasError(f"--amp {bad} are not precisions; choose from {', '.join(AMP)}")
    if bad := [c for c in compiles if c not in ("off", "on")]:
        raise DasError(f"--compile {bad} must be off, on or off,on")
    if args.steps < 1 or args.warmup < 0 or args.archs < 1:
        raise DasError("--steps and --archs must be at least 1, --warmup at least 0")
    device = resolve_device(args.device)
    if "fp16" in amps and device.type != "cuda":
        raise DasError(f"--amp fp16 needs CUDA (float16 autocast with a gradient scaler); {device} runs off and bf16")
    threads = set_threads(args.threads) if args.threads else torch.get_num_threads()
    result: dict[str, Any] = {"benchmark": "throughput", "device": device_name(device), "cases": {}}
    for key in cases:
        case = CASES[key]
        block = {"name": case["name"], "training": [], "scoring": None}
        for amp in amps:
            for mode in compiles:
                row = measure_training(case, device, amp, mode == "on", args)
                block["training"].append(row)
                print(f"{key} amp={amp} compile={mode}: das {row['das_images_per_s']:.1f} img/s, plain {row['plain_images_per_s']:.1f} "
                      f"img/s, ratio {row['ratio']:.3f}", flush=True)
        block["scoring"] = measure_scoring(case, device, args)
        print(f"{key} scoring: {block['scoring']['archs_per_s']:.2f} archs/s ({', '.join(SCORED)})", flush=True)
        result["cases"][key] = block
    result["settings"] = {**vars(args), "threads": threads, "torch": torch.__version__, "date": now_iso(),
                          "machine": machine_info(), "code": code_version()}
    write_json(Path(args.out), result)
    print(f"{result['device']}: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
