"""The Lightning module that distils a teacher into a student (or trains a network alone).

The teacher is frozen: ``requires_grad_(False)``, kept in ``eval()`` so its BatchNorm statistics
never move, called under ``torch.no_grad()``, left out of the optimizer, and left out of the
saved checkpoint (it is rebuilt from its spec and checkpoint path, which are hyperparameters).
With no teacher, the same module trains its network from scratch with cross-entropy: that is
how das trains the quickstart's teacher and the no-teacher baseline.

The objective is a :class:`~das.distill.losses.LossSpec` read from the ``losses`` config (any
registered loss, weighted). Logit losses (``ce``, ``kd``) take the two networks' logits once per
batch; feature losses are computed on every feature pair (:mod:`das.distill.pairing`:
``"final"`` maps only, ``"stages"``, or pairs named in the config) and averaged over the pairs:
``cosine`` and ``fitnet`` on the student map projected to the teacher's width (and spatially
aligned), ``relation`` on the raw maps. Feature maps are captured with forward hooks only when a
term of non-zero weight reads them.

The optimiser, LR schedule, warmup and weight-decay groups are flat arguments, checked on
creation and built by :mod:`das.distill.optim`. Validation and test log top-1 (``{stage}/acc``)
and top-5 (``{stage}/top5``) accuracy as fractions, and the cross-entropy (``{stage}/loss``).

Without a teacher, the terms that read anything but the student's logits and the labels (KD and
every feature loss) are left out, and the rest (``ce``, label smoothing included) is trained:
the no-teacher baseline of a distillation run is built from the same hyperparameters with
``teacher=None``, so it must train on the same config's label terms, scaled to the logit terms'
total weight so that both runs take steps of the same size (:func:`alone_terms`). A config that
leaves no label term with non-zero weight cannot train alone and is refused. Regularisers of the
student's own parameters (``bn_l1``, network slimming's L1 on BatchNorm scales) belong to the
student, so both runs keep them at their configured weight.

A student pruned at initialisation (:mod:`das.nets.masks`, applied by prune.py) saves its masks in
its checkpoints; :meth:`DistillModule.on_load_checkpoint` puts them back before the weights load,
so ``--ckpt_path last`` and ``DistillModule.load_from_checkpoint`` rebuild the same masked student.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
import dataclasses
import warnings
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from das.distill.losses import LossConfig, LossSpec, LossTerm, LossValues, bn_weights
from das.distill.objective import FEATURE_INPUTS, PARAMETER_INPUTS, DistillObjective, is_regulariser
from das.distill.optim import OptimConfig, build_optimizer, build_scheduler, param_groups, trainer_steps
from das.distill.pairing import FeaturePair, FeatureProjectors, pair_by_names, pair_stages
from das.distill.rng import rng_states, set_rng_states
from das.errors import DasError
from das.features import FeaturePoint, FeatureTap, feature_points, final_point
from das.models import arch_spec, build_model
from das.nets.masks import apply_masks, masks_from_state_dict
from das.spec import ArchSpec


# The frozen teacher is in eval mode on purpose; Lightning's warning about it is noise here.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class NonFiniteLoss(DasError, FloatingPointError):
    """The training loss became NaN or infinite: a user-fixable setting (usually the learning rate)."""


#: CE ½ + Hinton KD ½ at T = 4 (a weighted average, so distilling steps like training alone) + the
#: cosine loss at scale 1: the scale with the best worst-case gain over three regimes by a rule fixed
#: before its runs (docs/decisions.md: "The default cosine scale"). Scale 400 gained most on
#: ResNet-56 → ResNet-20 (+9.8 points) but cost small NB201 cells 4 points; 1 never cost.
DEFAULT_LOSSES: LossConfig = {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}, "cosine": {"weight": 1.0, "scale": 1.0}}

#: ``"final"`` (the pre-pool maps), ``"stages"`` (pair_stages), or ``[[student_module, teacher_module], ...]``.
FeaturePairs = Literal["final", "stages"] | list[tuple[str, str]]

#: The pairing the CIFAR-10 table chose: at scale 400, stage-wise cosine validated at 81.65%
#: against the final maps' 80.65% (two seeds; at scale 1 the two were within the noise). A network
#: that declares only its final map gets that one pair.
DEFAULT_FEATURE_PAIRS: FeaturePairs = "stages"

#: The inputs a term may read and still train without a teacher.
LABEL_INPUTS = frozenset({"student_logits", "targets"})


def needs_teacher(term: LossTerm) -> bool:
    """Whether ``term`` reads anything besides the student's logits, the labels and the student's parameters."""
    return not set(term.loss.needs) <= LABEL_INPUTS | PARAMETER_INPUTS


def alone_terms(spec: LossSpec) -> list[LossTerm]:
    """The label terms of non-zero weight, scaled to carry the weight of every logit term; a DasError if none.

    Why scaled: KD's gradient is about the size of CE's (the T² factor, Hinton et al. 2015), so a
    distilled run on ce ½ + kd ½ steps like ce 1, and a baseline on ce ½ alone would train at half
    its step size and lose for that reason only (docs/decisions.md: "The distillation recipe"). The label terms
    therefore share the total weight of the logit terms (label terms and kd; feature terms aside):
    ce ½ + kd ½ trains alone on ce 1, ce 1 + kd 1 on ce 2, ce 1 (+ any feature loss) on ce 1.
    Regularisers (``bn_l1``) are kept as they are: their weight is a penalty's strength (the λ
    of network slimming), the same in both runs, and not part of the logit terms' total.
    """
    kept = [t for t in spec.terms if t.weight > 0 and not needs_teacher(t)]
    label = [t for t in kept if not is_regulariser(t)]
    if not label:
        raise DasError(
            f"losses={spec.to_config()} has no term that trains without a teacher (the no-teacher baseline and "
            "teacher-less runs need one); add ce, e.g. ce: 1.0, or run with --baseline false"
        )
    logit_total = sum(t.weight for t in spec.terms if t.weight > 0 and not set(t.loss.needs) & FEATURE_INPUTS and not is_regulariser(t))
    factor = logit_total / sum(t.weight for t in label)
    return [dataclasses.replace(t, weight=t.weight * factor) if t in label else t for t in kept]


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """The fraction of rows whose target is among the ``k`` largest logits (``k`` capped at the class count)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == targets[:, None]).any(dim=1).float().mean()


def make_pairs(choice: FeaturePairs, student_points: list[FeaturePoint], teacher_points: list[FeaturePoint]) -> list[FeaturePair]:
    """The feature pairs ``choice`` names (see :data:`FeaturePairs`)."""
    if choice == "final":
        return [FeaturePair(final_point(student_points), final_point(teacher_points))]
    if choice == "stages":
        return pair_stages(student_points, teacher_points)
    if isinstance(choice, str) or not all(not isinstance(p, str) and len(p) == 2 for p in choice):
        raise DasError(f"feature_pairs={choice!r} must be 'final', 'stages' or a list of [student_module, teacher_module] pairs")
    return pair_by_names(student_points, teacher_points, [(str(s), str(t)) for s, t in choice])


class DistillModule(L.LightningModule):
    """Distil ``teacher`` into ``student`` with a weighted sum of registered losses.

    Args:
        student: the network to train: a path to an architecture JSON (e.g. a search's
            ``best_arch.json``), a leaderboard row (``runs/x/leaderboard.csv#N``), an inline
            ArchSpec JSON, or a teacher spec such as ``resnet20``.
        teacher: a teacher spec (``resnet20``, ``timm:NAME``, ``module:function``); None trains
            the student alone on the label terms of ``losses`` (ce).
        teacher_checkpoint: local weights for the teacher, loaded strictly.
        num_classes: classifier outputs (linked to the data module's in train.py).
        losses: the training objective, loss name → weight or ``{weight: w, option: value}``
            (names from ``das.distill.LOSSES``: ce, kd, cosine, relation, fitnet, bn_l1); default
            ce ½ + kd (weight ½, temperature 4) + cosine (weight 1, scale 1). Without a teacher
            only the label terms (ce) and the regularisers (bn_l1: L1 on the student's
            BatchNorm scales, for network slimming, weight λ e.g. 1e-4) apply.
        feature_pairs: which feature maps the feature losses compare: ``stages`` (default:
            each student stage with the teacher map of the same or nearest reduction), ``final``
            (the pre-pool maps only), or a list of ``[student_module, teacher_module]`` names of declared
            feature maps. Feature losses are averaged over the pairs.
        optimizer: ``sgd`` or ``adamw`` (names from ``das.distill.optim.OPTIMIZERS``).
        lr: peak learning rate, reached after any warmup; the schedule runs from it.
        momentum: SGD momentum, in [0, 1) (sgd only).
        nesterov: Nesterov momentum (sgd only; ignored when momentum is 0).
        weight_decay: weight decay (L2 for sgd, decoupled for adamw), >= 0; not applied to
            norm-layer parameters and biases unless ``decay_norm_and_bias``.
        betas: AdamW's two moment coefficients, each in [0, 1) (adamw only).
        schedule: the LR per optimizer step: ``cosine`` (to 0 at the end of the run), ``step``
            (times ``gamma`` at each of ``milestones``) or ``constant``.
        warmup_epochs: epochs of linear warmup from ~0 to ``lr`` before the schedule (fractions
            allowed; 0 for none); must be shorter than the run.
        milestones: for ``step``: the epochs, strictly increasing and counted from the run's
            start (all after the warmup), at which the LR is multiplied by ``gamma``.
        gamma: the step schedule's factor, in (0, 1].
        decay_norm_and_bias: also decay norm-layer (BatchNorm, GroupNorm, LayerNorm, ...)
            parameters and biases, which are left undecayed by default.
        input_size: (C, H, W) of one input, used to infer feature points of models that
            declare none.
        channels_last: run the student and teacher, and feed 4-D batches, in the channels-last
            memory format: the same maths (outputs equal to float rounding), faster convolutions
            (docs/results.md: "Speed"); false keeps PyTorch's default layout.
        compile: run the student's and the teacher's training forwards through ``torch.compile``:
            the first steps compile (a minute or more on a CPU), later ones may run faster; the
            modules, their state dicts and the exported student are unchanged. What dynamo cannot
            trace runs eagerly, by torch's own rules.
        student_spec: filled in automatically (for a student of a search space) so a
            checkpoint rebuilds its student without the JSON file, leaderboard or study; leave unset.
    """

    def __init__(
        self,
        student: str,
        teacher: str | None = None,
        teacher_checkpoint: str | None = None,
        num_classes: int = 10,
        losses: LossConfig = DEFAULT_LOSSES,
        feature_pairs: FeaturePairs = DEFAULT_FEATURE_PAIRS,
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        schedule: str = "cosine",
        warmup_epochs: float = 0.0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        decay_norm_and_bias: bool = False,
        input_size: tuple[int, int, int] = (3, 32, 32),
        channels_last: bool = False,
        compile: bool = False,  # noqa: A002  (the flag's name on the command line: --model.compile)
        student_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.optim = OptimConfig(
            optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, betas=betas,
            schedule=schedule, warmup_epochs=warmup_epochs, milestones=None if milestones is None else tuple(milestones),
            gamma=gamma, decay_norm_and_bias=decay_norm_and_bias,
        )
        self.loss_spec = LossSpec.from_config(losses)
        if teacher is None and teacher_checkpoint is not None:
            raise DasError(f"teacher_checkpoint={teacher_checkpoint!r} is given but no teacher; set --model.teacher to the checkpoint's architecture")
        if student_spec is None and (arch := arch_spec(student)) is not None:
            student_spec = arch.to_dict()
        losses = copy.deepcopy(dict(losses))  # the default is shared; the saved hparams must not be
        self.save_hyperparameters()
        # Under LightningCLI, save_hyperparameters records the parsed arguments, not these locals,
        # so the spec filled in above must be set by hand or train.py's checkpoints would lack it.
        self.hparams["student_spec"] = student_spec
        example = torch.zeros(2, *input_size)
        self.student = build_model(ArchSpec.from_dict(student_spec) if student_spec else student, num_classes, what="student")
        self.student_points = feature_points(self.student, example)
        if "student_bn_weights" in self.loss_spec.needs:
            bn_weights(self.student)  # a student without BatchNorm fails now, not at its first step
        self.teacher: nn.Module | None = None
        self.pairs: list[FeaturePair] = []
        if teacher is None:
            self.terms = alone_terms(self.loss_spec)
        else:
            self.terms = [t for t in self.loss_spec.terms if t.weight > 0]
            if not self.terms:
                raise DasError(f"losses={self.loss_spec.to_config()} has every weight 0, so nothing would train; give at least one term a weight > 0")
            self.teacher = build_model(teacher, num_classes, checkpoint=teacher_checkpoint)
            self.teacher.requires_grad_(False).eval()
            self.teacher_points = feature_points(self.teacher, example)
            self.pairs = make_pairs(feature_pairs, self.student_points, self.teacher_points)
        # One projector per pair (identity where widths agree); empty without a teacher. Built
        # whenever there is a teacher so a run's parameters and random draws do not depend on the weights.
        self.projectors = FeatureProjectors(self.pairs)
        self.objective = DistillObjective(self.terms)
        self.feature_terms = self.objective.feature_terms
        self._compiled: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}  # id(module) -> its compiled forward
        if channels_last:  # converts 4-D weights only; 2-D and 1-D ones have a single layout
            for net in (self.student, self.teacher, self.projectors):
                if net is not None:
                    net.to(memory_format=torch.channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the networks run in (channels-last for a 4-D batch when asked)."""
        if self.hparams.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @property
    def uses_features(self) -> bool:
        """Whether a training step captures feature maps (a term of non-zero weight reads them)."""
        return self.objective.uses_features

    def train(self, mode: bool = True) -> DistillModule:
        """Switch the student to ``mode`` but keep the teacher in eval mode, always."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(self._layout(x))

    def describe_pairs(self) -> str | None:
        """One line naming the feature pairs and the losses taken on them; None when no term reads features."""
        if not self.uses_features:
            return None
        names = ", ".join(t.name for t in self.feature_terms)
        return f"feature pairs ({names}, averaged over {len(self.pairs)}): " + "; ".join(p.describe() for p in self.pairs)

    def on_train_start(self) -> None:
        if line := self.describe_pairs():
            self.print(line)

    def forward_of(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """``model`` itself, or with ``compile`` its compiled forward (kept outside the module tree, so state dicts keep their keys)."""
        if not self.hparams.get("compile", False):
            return model
        if id(model) not in self._compiled:
            self._compiled[id(model)] = torch.compile(model)
        return self._compiled[id(model)]

    def _run(self, model: nn.Module, names: list[str], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and the outputs of ``names`` (in that order; none unless a term reads features)."""
        forward = self.forward_of(model)
        if not self.uses_features:
            return forward(x), []
        with FeatureTap(model, list(dict.fromkeys(names))) as tap:  # hooks on the module a compiled forward traces
            logits = forward(x)
        return logits, [tap.outputs[n] for n in names]

    def compute_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, LossValues]:
        """The student's logits and the training objective on one batch: the weighted total and each term's value."""
        x = self._layout(x)
        t_logits, t_maps = None, []
        if self.teacher is not None:  # first, so its activations are freed before the student's graph is built
            with torch.no_grad():  # the teacher runs once per batch, frozen, in eval mode
                t_logits, t_maps = self._run(self.teacher, [p.teacher.module for p in self.pairs], x)
        logits, s_maps = self._run(self.student, [p.student.module for p in self.pairs], x)
        return logits, self.objective(logits, y, t_logits, s_maps, t_maps, self.projectors, self.student)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> torch.Tensor:
        x, y = batch
        hp = self.hparams
        logits, values = self.compute_losses(x, y)
        loss = values.total
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step} with model.lr={hp.lr:g} "
                f"({self.optim.optimizer}); lower it (the quickstart's sgd uses 0.05)"
            )
        for name, value in values.terms.items():
            self.log(f"train/{name}", value)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        self.log("train/top5", topk_accuracy(logits.detach(), y, 5))
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        # sync_dist: under DDP each process sees a shard; the logged (and monitored) value is their mean.
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, sync_dist=True)
        self.log(f"{stage}/top5", topk_accuracy(logits, y, 5), sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        """The student's and projectors' optimizer (never the teacher's) and its per-step LR schedule."""
        optimizer = build_optimizer(param_groups([self.student, self.projectors], self.optim.weight_decay, self.optim.decay_norm_and_bias), self.optim)
        scheduler = build_scheduler(optimizer, self.optim, *trainer_steps(self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the frozen teacher out of the student's checkpoint (it is rebuilt from its spec); keep the generators."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}
        checkpoint["das_rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restore_masks(checkpoint["state_dict"])
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        # Only when a Trainer resumes a fit (not load_from_checkpoint): from here until the next
        # epoch draws its first shuffle, a resumed fit draws from the generators exactly as the
        # uninterrupted run did after saving this checkpoint, provided the resumed Trainer skips
        # its sanity check (train.py does). tests/cli/test_train_cli.py checks the weights match.
        states = checkpoint.get("das_rng_states")
        if states is not None and self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            set_rng_states(states)

    def _restore_masks(self, state: dict[str, torch.Tensor]) -> None:
        """Put back the pruning masks a checkpoint's student carries, so its masked keys load strictly.

        A student pruned at initialisation (prune.py) trains with das.nets.masks parametrizations,
        whose state dict holds ``...parametrizations.weight.original`` and ``...0.mask`` in place of
        ``...weight``. Called before Lightning loads the state dict, both on resuming a fit and in
        ``load_from_checkpoint``; the masks stay fixed for the rest of the fit.
        """
        prefix = "student."
        masks = masks_from_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        if not masks:
            return
        apply_masks(self.student, masks)
        if self.hparams.channels_last:  # the new mask buffers in the layout of the weights they multiply
            self.student.to(memory_format=torch.channels_last)
