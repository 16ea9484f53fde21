"""The pieces prune.py is built from: the prune section's checks, the sizes a masked network leaves,
and a masked student's Lightning checkpoint loading back into the same masked network."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from das.distill import DistillModule
from das.errors import DasError
from das.prune import applied_masks, apply_masks, prune_at_init
from das.prune.config import PruneConfig
from das.prune.masked_run import mask_student
from das.prune.sizes import density_section, masked_size
from das.stats import count_flops, count_params
from tests.tinynets import TinyNet, batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: threads only wait on each other


@pytest.mark.parametrize(("settings", "expected"), [
    ({"density": 0.0}, "prune.density must be a number strictly between 0 and 1"),
    ({"density": 1.0}, "prune.density must be a number strictly between 0 and 1"),
    ({"density": -0.5}, "prune.density must be"),
    ({}, "prune.density is not set"),
    ({"method": "pxx", "density": 0.1}, "did you mean 'px'"),
    ({"density": 0.1, "ratio": 0.5}, "prune.ratio=0.5 is an option of slim"),
    ({"density": 0.1, "rounds": 0}, "prune.rounds=0"),
    ({"density": 0.1, "probe_batches": 0}, "prune.probe_batches=0"),
    ({"method": "slim", "ratio": 0.0, "sparse_epochs": 1}, "prune.ratio=0.0 must be a number in (0, 1)"),
    ({"method": "slim", "ratio": 1.0, "sparse_epochs": 1}, "prune.ratio=1.0 must be a number in (0, 1)"),
    ({"method": "slim", "sparse_epochs": 1}, "exactly one of ratio or threshold"),
    ({"method": "slim", "ratio": 0.5}, "slim needs a trained network"),
    ({"method": "slim", "ratio": 0.5, "density": 0.1, "sparse_epochs": 1}, "prune.density=0.1 is an option of the at-init methods"),
    ({"method": "slim", "ratio": 0.5, "bn_l1": 1e-4, "checkpoint": __file__}, "sparse_epochs is 0"),
    ({"method": "slim", "ratio": 0.5, "sparse_epochs": -1}, "prune.sparse_epochs=-1"),
    ({"method": "slim", "ratio": 0.5, "checkpoint": "/nonexistent/w.pt"}, "prune.checkpoint='/nonexistent/w.pt' does not exist"),
])
def test_bad_prune_settings_are_one_line_naming_the_option(settings, expected) -> None:
    with pytest.raises(DasError) as err:
        PruneConfig(**settings)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_good_settings_resolve_their_defaults() -> None:
    at_init = PruneConfig(method="snip", density=0.05)
    assert at_init.at_init and at_init.density == 0.05
    slim = PruneConfig(method="slim", ratio=0.3, sparse_epochs=2)
    assert not slim.at_init and slim.sparse_lambda == 1e-4 and slim.distills and slim.slim_config().ratio == 0.3


def test_masked_size_counts_what_the_masks_remove() -> None:
    """Params less the pruned weights; FLOPs less 2 per pruned weight per output position (8×8 convs, one linear row)."""
    model = TinyNet(width=8)
    masks = prune_at_init(model, "magnitude", 0.25, input_shape=(3, 8, 8))
    dense, pruned = masked_size(model, masks, (3, 8, 8))
    assert dense.params == count_params(model) and dense.flops == count_flops(model, (3, 8, 8))
    removed = {n: int((~m).sum()) for n, m in masks.items()}
    assert pruned.params == dense.params - sum(removed.values())
    assert pruned.flops == dense.flops - 2 * (64 * removed["body.0.weight"] + 64 * removed["body.3.weight"] + removed["fc.weight"])
    # The same network masked and with the zeros baked in: FLOPs of a dense kernel are unchanged.
    apply_masks(model, masks)
    assert count_flops(model, (3, 8, 8)) == dense.flops


def test_density_section_reports_every_layer_and_no_empty_one() -> None:
    model = TinyNet(width=8)
    apply_masks(model, prune_at_init(model, "synflow", 0.02, input_shape=(3, 8, 8), rounds=5))
    section = density_section(model)
    assert [r["name"] for r in section["layers"]] == ["body.0.weight", "body.3.weight", "fc.weight"]
    assert section["empty_layers"] == 0 and section["min_layer_density"] > 0
    assert section["overall"]["density"] == pytest.approx(0.02, abs=1 / 872)
    assert section["overall"]["sparsity"] == pytest.approx(1 - section["overall"]["density"])


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_masked_students_checkpoint_loads_back_masked_with_the_same_outputs(tmp_path, channels_last) -> None:
    """One optimiser step with masks, a Lightning checkpoint, load_from_checkpoint: the same masks, outputs bit for bit."""
    L.seed_everything(0, verbose=False)
    module = DistillModule(student="tests.tinynets:TinyNet", input_size=(3, 8, 8), losses={"ce": 1.0}, channels_last=channels_last)
    masks = prune_at_init(module.student, "random", 0.3, input_shape=(3, 8, 8))
    mask_student(module, masks)
    x, y = batch(16)
    trainer = L.Trainer(max_steps=1, default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    trainer.save_checkpoint(tmp_path / "masked.ckpt")
    loaded = DistillModule.load_from_checkpoint(tmp_path / "masked.ckpt")
    assert {n: m.tolist() for n, m in applied_masks(loaded.student).items()} == {n: m.tolist() for n, m in masks.items()}
    module.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))
    for name, mask in masks.items():
        assert (loaded.student.get_submodule(name.rpartition(".")[0]).weight[~mask] == 0).all()
