"""Fake inputs for the benchmark scripts' smoke tests: CIFAR-shaped npz files and an untrained teacher checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def write_fake_cifar(path: Path, images: int, seed: int = 0) -> Path:
    """An npz of ``images`` random 32×32 RGB uint8 images in CIFAR's layout, labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8), y=np.arange(images) % 10)
    return path


def save_random_teacher(path: Path, spec: str = "resnet20", seed: int = 0) -> Path:
    """An untrained (seeded) ``spec`` saved as a teacher checkpoint: a teacher file without training one."""
    import teachers

    torch.manual_seed(seed)
    torch.save(teachers.create_teacher(spec).state_dict(), path)
    return path
