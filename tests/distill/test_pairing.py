"""Stage-by-stage pairing of student and teacher feature maps, and the projectors that align them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from das.distill.pairing import FeaturePair, FeatureProjectors, pair_by_names, pair_stages
from das.errors import DasError
from das.features import FeaturePoint, FeatureTap, feature_points
from das.spaces import create_space
from teachers import create_teacher

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _maps(model: nn.Module, names: list[str], x: torch.Tensor) -> list[torch.Tensor]:
    with FeatureTap(model, names) as tap:
        model(x)
    return [tap.outputs[n] for n in names]


def _forward_pairs(student: nn.Module, teacher: nn.Module, pairs: list[FeaturePair], x: torch.Tensor):
    student_maps = _maps(student, [p.student.module for p in pairs], x)
    with torch.no_grad():
        teacher_maps = _maps(teacher.eval(), [p.teacher.module for p in pairs], x)
    return student_maps, teacher_maps


@pytest.fixture(scope="module")
def resnets() -> tuple[nn.Module, nn.Module]:
    return create_teacher("resnet20", num_classes=10), create_teacher("resnet56", num_classes=10)


@pytest.fixture(scope="module")
def nb201() -> nn.Module:
    space = create_space("nb201", C=8, N=1)
    return space.build(space.spec(arch=NB201_ARCH), 10)


def test_resnet20_against_resnet56_gives_three_pairs_of_matching_size(resnets) -> None:
    student, teacher = resnets
    pairs = pair_stages(feature_points(student), feature_points(teacher))
    assert [(p.student.module, p.teacher.module) for p in pairs] == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    assert [p.describe() for p in pairs] == [
        "layer1 (16 ch, /1) -> layer1 (16 ch, /1)",
        "layer2 (32 ch, /2) -> layer2 (32 ch, /2)",
        "layer3 (64 ch, /4) -> layer3 (64 ch, /4)",
    ]
    s_maps, t_maps = _forward_pairs(student, teacher, pairs, torch.randn(2, 3, 32, 32))
    assert [s.shape for s in s_maps] == [t.shape for t in t_maps]
    assert [s.shape[-1] for s in s_maps] == [32, 16, 8]


def test_nb201_student_pairs_by_reduction_and_projectors_widen(nb201, resnets) -> None:
    teacher = resnets[1]
    pairs = pair_stages(feature_points(nb201), feature_points(teacher))
    # The final map (lastact, /4) stands for the last stage (cells.4, /4): one pair per resolution.
    assert [(p.student.module, p.teacher.module) for p in pairs] == [("cells.0", "layer1"), ("cells.2", "layer2"), ("lastact", "layer3")]
    assert all(p.student.reduction == p.teacher.reduction for p in pairs)
    projectors = FeatureProjectors(pairs)
    assert [tuple(m.weight.shape) for m in projectors.projectors] == [(16, 8, 1, 1), (32, 16, 1, 1), (64, 32, 1, 1)]
    s_maps, t_maps = _forward_pairs(nb201, teacher, pairs, torch.randn(2, 3, 32, 32))
    aligned = projectors(s_maps, t_maps)
    assert [s.shape for s, _ in aligned] == [t.shape for _, t in aligned] == [
        (2, 16, 32, 32),
        (2, 32, 16, 16),
        (2, 64, 8, 8),
    ]
    sum(((s - t) ** 2).mean() for s, t in aligned).backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in projectors.projectors)


def test_nearest_reduction_when_a_size_is_missing() -> None:
    student = [
        FeaturePoint("s1", 8, 1),
        FeaturePoint("s2", 16, 2),
        FeaturePoint("s8", 32, 8),
        FeaturePoint("s32", 64, 32, "final"),
        FeaturePoint("fc", 10, 1, "logits"),
    ]
    teacher = [
        FeaturePoint("t2", 24, 2),
        FeaturePoint("t4a", 48, 4),
        FeaturePoint("t4b", 48, 4),
        FeaturePoint("t16", 96, 16, "final"),
        FeaturePoint("head", 10, 1, "logits"),
    ]
    pairs = pair_stages(student, teacher)
    # /1 -> /2 (only nearest); /2 -> /2 (exact); /8 is 1 octave from /4 and /16: the deeper /16
    # wins; /32 -> /16; the logits take no part.
    assert [(p.student.module, p.teacher.module) for p in pairs] == [("s1", "t2"), ("s2", "t2"), ("s8", "t16"), ("s32", "t16")]
    # Two teacher points at the same reduction: the deeper one.
    assert pair_stages([FeaturePoint("s4", 8, 4, "final")], teacher)[0].teacher.module == "t4b"


def test_final_is_kept_when_its_resolution_differs_from_the_last_stage() -> None:
    student = [FeaturePoint("a", 8, 2), FeaturePoint("b", 8, 4), FeaturePoint("f", 8, 8, "final")]
    teacher = [FeaturePoint("t", 8, 4, "final")]
    assert [p.student.module for p in pair_stages(student, teacher)] == ["a", "b", "f"]


def test_pair_by_names(resnets) -> None:
    s_points, t_points = (feature_points(m) for m in resnets)
    pairs = pair_by_names(s_points, t_points, [("layer3", "layer3"), ("layer2", "layer3")])
    assert [p.describe() for p in pairs] == ["layer3 (64 ch, /4) -> layer3 (64 ch, /4)", "layer2 (32 ch, /2) -> layer3 (64 ch, /4)"]


@pytest.mark.parametrize(
    "pairs, words",
    [
        ([("layr2", "layer2")], ["'layr2'", "student", "layer1, layer2, layer3", "did you mean 'layer2'"]),
        ([("layer2", "linear")], ["'linear'", "teacher", "layer1, layer2, layer3"]),
        ([], ["at least one"]),
    ],
)
def test_pair_by_names_rejects_bad_names_in_one_line(resnets, pairs, words) -> None:
    s_points, t_points = (feature_points(m) for m in resnets)
    with pytest.raises(DasError) as err:
        pair_by_names(s_points, t_points, pairs)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_identity_projector_when_widths_match(resnets) -> None:
    student, teacher = resnets
    pairs = pair_stages(feature_points(student), feature_points(teacher))
    projectors = FeatureProjectors(pairs)
    assert all(isinstance(m, nn.Identity) for m in projectors.projectors)
    assert sum(p.numel() for p in projectors.parameters()) == 0
    s_maps, t_maps = _forward_pairs(student, teacher, pairs, torch.randn(2, 3, 16, 16))
    for (s, t), s_in, t_in in zip(projectors(s_maps, t_maps), s_maps, t_maps):
        assert s is s_in and t is t_in


def test_projectors_pool_the_larger_map_and_check_inputs() -> None:
    pair = FeaturePair(FeaturePoint("s", 4, 1, "final"), FeaturePoint("t", 6, 2, "final"))
    projectors = FeatureProjectors([pair])
    [(s, t)] = projectors([torch.randn(2, 4, 8, 8)], [torch.randn(2, 6, 4, 4)])
    assert s.shape == t.shape == (2, 6, 4, 4)
    with pytest.raises(DasError, match="1 pairs but got 2 student"):
        projectors([torch.randn(2, 4, 8, 8)] * 2, [torch.randn(2, 6, 4, 4)])
    with pytest.raises(DasError, match="5 and 6 channels"):
        projectors([torch.randn(2, 5, 8, 8)], [torch.randn(2, 6, 4, 4)])
