"""Network slimming: BatchNorm channels removed by γ, every dependent layer resized (residual stages
and option-A shortcuts included), exact where the cut channels output nothing; sizes, saving and
distillation of the pruned network."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from das.data import DasDataModule
from das.distill import DistillModule
from das.errors import DasError
from das.models import build_model
from das.nets.cifar_resnet import CifarResNet, PadShortcut
from das.nets.pruned import IndexShortcut, PrunedSpec, save_pruned
from das.prune.slim import SlimConfig, load_pruned, slim
from das.stats import count_flops, count_params
from tests.tinynets import TinyNet

SIZE = (3, 8, 8)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only wait on each other


def bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def trained_looking(model: nn.Module) -> nn.Module:
    """BatchNorms away from their init (γ 1, β 0, μ 0, σ² 1), so that kept channels carry real values."""
    g = torch.Generator().manual_seed(1)
    for bn in bns(model):
        n = bn.num_features
        bn.weight.data = torch.rand(n, generator=g) + 0.5
        bn.bias.data = 0.1 * torch.randn(n, generator=g)
        bn.running_mean.data = 0.1 * torch.randn(n, generator=g)
        bn.running_var.data = torch.rand(n, generator=g) + 0.5
    return model.eval()


def silence(bn: nn.BatchNorm2d, channels: list[int]) -> None:
    """γ = β = 0: the channels output exactly 0 in eval mode, whatever their input."""
    bn.weight.data[channels] = 0.0
    bn.bias.data[channels] = 0.0


def widths(model: nn.Module) -> dict[str, int]:
    return {name: m.num_features for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_a_slimmed_resnet_runs_with_every_layer_resized(name) -> None:
    """Per layer at half: every group, residual streams included, keeps half its channels, and the
    convolutions, option-A shortcuts and classifier that read them follow."""
    model = trained_looking(build_model(name, 10))
    slimmed = slim(model, SlimConfig(ratio=0.5, scope="layer", multiple=8), SIZE)
    pruned = slimmed.model.eval()
    assert all(after == before // 2 for before, after in slimmed.channels.values())
    assert pruned.layer2[0].conv1.weight.shape == (16, 8, 3, 3) and pruned.layer3[0].conv1.weight.shape == (32, 16, 3, 3)
    assert isinstance(pruned.layer2[0].shortcut, IndexShortcut) and len(pruned.layer2[0].shortcut.source) == 16
    assert pruned.linear.in_features == 32
    assert [p.channels for p in pruned.feature_points()] == [8, 16, 32, 10]
    assert pruned(torch.randn(2, *SIZE)).shape == (2, 10)
    assert widths(model)["layer1.0.bn1"] == 16  # the network given is left unpruned


def test_a_half_width_resnet20_is_the_size_of_resnet20_at_half_width() -> None:
    """Halving every group of ResNet-20 gives exactly the parameters and FLOPs of CifarResNet(widths=(8, 16, 32))."""
    slimmed = slim(trained_looking(build_model("resnet20", 10)), SlimConfig(ratio=0.5, scope="layer"), SIZE)
    narrow = CifarResNet(3, num_classes=10, widths=(8, 16, 32))
    assert slimmed.before.params == 269_722
    assert slimmed.after.params == count_params(narrow) == count_params(slimmed.model)
    assert slimmed.after.flops == count_flops(narrow, SIZE) < slimmed.before.flops


def test_params_and_flops_shrink_by_the_channels_removed() -> None:
    """TinyNet (3→8→8 convs, 10 classes) at width 4: each count by hand."""
    slimmed = slim(trained_looking(TinyNet(width=8)), SlimConfig(ratio=0.5, scope="layer"), SIZE)
    convs = 3 * 4 * 9 + 4 * 4 * 9
    assert slimmed.after.params == convs + 2 * (2 * 4) + (4 * 10 + 10)
    assert slimmed.after.flops == 2 * convs * 8 * 8 + 2 * 4 * 10
    report = slimmed.report()
    assert report["params"]["before"] == 3 * 8 * 9 + 8 * 8 * 9 + 2 * 16 + 90 and report["params"]["after"] == slimmed.after.params
    assert report["bn_channels"] == {"before": 16, "after": 8, "removed_fraction": 0.5}
    assert report["layers"]["body.1"] == {"before": 8, "after": 4}


def test_cutting_silenced_channels_leaves_the_outputs_unchanged() -> None:
    """Channels with γ = β = 0 everywhere they are scaled are cut, and the logits do not move.

    Silenced: three channels inside a block; stage-1 stream channel 5 (the stem's BN and every
    block's second BN: a residual stream is one group); stage-2 stream channel 0, which the option-A
    shortcut pads with zeros; and stage-2 stream channel 10, whose own γ are 0 but which the shortcut
    feeds from live stage-1 channel 2, so it must be kept.
    """
    model = trained_looking(build_model("resnet20", 10))
    silence(model.layer1[0].bn1, [1, 2, 3])
    for bn in [model.bn1, *(b.bn2 for b in model.layer1)]:
        silence(bn, [5])
    for bn in (b.bn2 for b in model.layer2):
        silence(bn, [0, 10])
    x = torch.randn(4, *SIZE)
    with torch.no_grad():
        before = model(x)
    slimmed = slim(model, SlimConfig(threshold=1e-6), SIZE)
    with torch.no_grad():
        after = slimmed.model.eval()(x)
    w = widths(slimmed.model)
    assert w["layer1.0.bn1"] == 13 and w["bn1"] == w["layer1.2.bn2"] == 15
    assert w["layer2.0.bn2"] == w["layer2.2.bn2"] == 31  # channel 0 cut, channel 10 kept
    assert sum(slimmed.channels[n][0] - w[n] for n in w) == 3 + 4 * 1 + 3 * 1
    # Channel 10 (now 9) still carries stage-1 channel 2; stage-1 channel 5's entry now reads zeros.
    source = slimmed.model.layer2[0].shortcut.source.tolist()
    assert source[9] == 2 and source[12] == -1 and source[:7] == [-1] * 7
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())


def test_a_channel_with_zero_gamma_but_nonzero_beta_is_cut_and_moves_the_outputs() -> None:
    """Slimming scores γ only (as Liu et al.): such a channel outputs the constant β, which its cut removes."""
    model = trained_looking(TinyNet(width=8))
    model.body[1].weight.data[0], model.body[1].bias.data[0] = 0.0, 0.5  # the channel outputs relu(0.5) everywhere
    x = torch.randn(4, *SIZE)
    with torch.no_grad():
        before = model(x)
        slimmed = slim(model, SlimConfig(threshold=1e-6), SIZE)
        after = slimmed.model.eval()(x)
    assert slimmed.channels["body.1"] == (8, 7)
    assert not torch.allclose(after, before)


def test_an_option_a_shortcut_and_its_index_shortcut_agree() -> None:
    pad = PadShortcut(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(IndexShortcut.from_pad(pad, 16)(x), pad(x))


def test_global_ratio_cuts_the_lowest_gammas_of_the_network_but_never_a_whole_layer() -> None:
    model = trained_looking(TinyNet(width=8))
    model.body[1].weight.data[:] = 1e-3  # the first layer's channels are the network's 8 lowest
    model.body[4].weight.data[:] = 1.0
    assert slim(model, SlimConfig(ratio=0.5), SIZE).channels == {"body.1": (8, 1), "body.4": (8, 8)}
    assert slim(model, SlimConfig(ratio=0.5, multiple=4), SIZE).channels == {"body.1": (8, 4), "body.4": (8, 8)}


@pytest.mark.parametrize(("ratio", "kept"), [(0.3, 16), (0.6, 8), (0.9, 8)])
def test_kept_counts_round_up_to_the_multiple(ratio, kept) -> None:
    """16 channels: 0.3 removes 4 (12 kept, rounded up to 16), 0.6 removes 9 (7 → 8), 0.9 removes 14 (2 → 8)."""
    slimmed = slim(trained_looking(TinyNet(width=16, depth=1)), SlimConfig(ratio=ratio, scope="layer", multiple=8), SIZE)
    assert slimmed.channels == {"body.1": (16, kept)}


def test_the_pruned_network_saves_and_reloads_with_identical_outputs(tmp_path) -> None:
    slimmed = slim(trained_looking(build_model("resnet20", 10)), SlimConfig(ratio=0.4, multiple=4), SIZE)
    path = save_pruned(tmp_path / "pruned.pt", slimmed.model, slimmed.spec("resnet20", 10))
    x = torch.randn(3, *SIZE)
    for loaded in (load_pruned(path), build_model(str(path), 10)):
        assert widths(loaded) == widths(slimmed.model)
        assert [p.channels for p in loaded.feature_points()] == [p.channels for p in slimmed.model.feature_points()]
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x), slimmed.model.eval()(x))
    spec = slimmed.spec("resnet20", 10)
    assert PrunedSpec.from_dict(spec.to_dict()) == spec


def test_loading_refuses_what_is_not_a_pruned_network(tmp_path) -> None:
    slimmed = slim(trained_looking(TinyNet()), SlimConfig(ratio=0.5), SIZE)
    path = save_pruned(tmp_path / "pruned.pt", slimmed.model, slimmed.spec("tests.tinynets:TinyNet", 10))
    with pytest.raises(DasError, match="has 10 classes, not num_classes=3"):
        build_model(str(path), 3)
    weights = tmp_path / "weights.pt"
    torch.save(TinyNet().state_dict(), weights)
    with pytest.raises(DasError, match="is not a pruned network"):
        load_pruned(weights)
    with pytest.raises(DasError, match="does not exist"):
        build_model(str(tmp_path / "missing.pt"), 10)


def test_the_pruned_network_distils_from_the_unpruned_one(tmp_path) -> None:
    """The saved file is the student, the unpruned network (spec + weights) the teacher; the cosine
    loss's projector reads the pruned width, and a checkpoint reloads the fine-tuned student."""
    teacher = trained_looking(build_model("resnet20", 10))
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    slimmed = slim(teacher, SlimConfig(ratio=0.5, scope="layer"), SIZE)
    path = save_pruned(tmp_path / "pruned.pt", slimmed.model, slimmed.spec("resnet20", 10))
    module = DistillModule(student=str(path), teacher="resnet20", teacher_checkpoint=str(tmp_path / "teacher.pt"),
                           input_size=SIZE, losses={"ce": 1.0, "kd": 1.0, "cosine": 1.0, "bn_l1": 1e-4})
    assert len(module.pairs) == 3 and module.pairs[-1].describe() == "layer3 (32 ch, /4) -> layer3 (64 ch, /4)"  # stage pairs
    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, accelerator="cpu")
    trainer.fit(module, datamodule=DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[]))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    reloaded = DistillModule.load_from_checkpoint(tmp_path / "m.ckpt")
    for key, value in module.student.state_dict().items():
        assert torch.equal(value, reloaded.student.state_dict()[key])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ratio": 0.0}, "ratio=0.0 must be a number in (0, 1)"),
    ({"ratio": 1.0}, "ratio=1.0 must be a number in (0, 1)"),
    ({"ratio": -0.2}, "ratio=-0.2 must be"),
    ({"ratio": True}, "ratio=True must be"),
    ({"ratio": "half"}, "ratio='half' must be"),
    ({"threshold": 0.0}, "threshold=0.0 must be a finite number > 0"),
    ({"threshold": -1e-3}, "threshold=-0.001 must be"),
    ({"threshold": float("inf")}, "threshold=inf must be"),
    ({"threshold": float("nan")}, "threshold=nan must be"),
    ({}, "exactly one of ratio or threshold"),
    ({"ratio": 0.5, "threshold": 0.1}, "exactly one of ratio or threshold"),
    ({"threshold": 0.1, "scope": "layer"}, "scope must be 'global'"),
    ({"ratio": 0.5, "scope": "network"}, "scope='network' must be one of global, layer"),
    ({"ratio": 0.5, "multiple": 0}, "multiple=0 must be an integer >= 1"),
])
def test_bad_settings_fail_with_one_clear_line(kwargs, message) -> None:
    with pytest.raises(DasError) as err:
        SlimConfig(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_threshold_above_every_gamma_fails_with_one_clear_line() -> None:
    with pytest.raises(DasError, match=r"threshold=10\.0 is above every channel's \|γ\| \(the largest is [\d.]+\)") as err:
        slim(trained_looking(TinyNet()), SlimConfig(threshold=10.0), SIZE)
    assert "\n" not in str(err.value)


def test_a_network_without_batchnorm_cannot_be_slimmed() -> None:
    with pytest.raises(DasError, match="has no BatchNorm channels to remove"):
        slim(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)), SlimConfig(ratio=0.5), SIZE)
