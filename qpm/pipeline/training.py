"""The one training loop, shared by the dense and the fine-tuning stages.

SGD with momentum and weight decay and StepLR, or schedule-free AdamW
(:mod:`qpm.pipeline.optimizers`); cross-entropy plus the feature-diversity loss, for CHiQPM
the Feature Grounding Loss until its switch-off epoch, and in a fine-tuning stage optionally
DINO-QPM's L1 penalties on the selected feature maps and features. :func:`fit` owns the stage
(resume, loader, epochs, checkpoints); :func:`train_one_epoch`
owns one pass of optimisation steps, each computing its loss in :func:`training_step`.
After every epoch the model, optimizer and scheduler go to an atomic checkpoint (plain
tensors and numbers, loadable with weights_only=True); a restarted stage continues from the
last finished epoch with the same batches, since the order depends only on (seed, epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from qpm.errors import QPMError
from qpm.io import ArtifactError
from qpm.models.adapter import load_trainable, trainable_state
from qpm.models.diversity_loss import diversity_loss
from qpm.models.grounding_loss import feature_grounding_loss
from qpm.models.torch_files import load_checkpoint, save_torch
from qpm.pipeline import distributed as dist
from qpm.pipeline import optimizers


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    step_size: int
    gamma: float
    batch_size: int  # global: split evenly over torchrun processes
    beta: float = 0.196
    classifier_lr: float | None = None  # None: same as lr
    seed: int = 0
    workers: int = 0
    # Drop the ragged last batch (see train_loader); False keeps every image in every epoch,
    # as the reference's loader does (--reference-quirks).
    drop_last: bool = True
    grounding: float = 0.0  # weight of the Feature Grounding Loss (needs a ChiQPMLayer head)
    grounding_off: int | None = None  # the epoch (from 0) it is switched off at; None: never
    optimizer: str = "sgd"  # or "adamw-schedulefree" (qpm.pipeline.optimizers)
    l1_maps: float = 0.0  # weight of mean |map| over the final layer's features
    l1_features: float = 0.0  # weight of mean |pooled feature| over them

    def grounding_at(self, epoch: int) -> float:
        """The Feature Grounding Loss weight in ``epoch`` (counted from 0)."""
        on = self.grounding_off is None or epoch < self.grounding_off
        return self.grounding if on else 0.0


class EpochTotals:
    """One rank's running sums over an epoch, kept on the device: adding a batch never waits
    for the GPU (no ``.item()`` per step), reading them does. :func:`fit` reduces them over
    the ranks."""

    def __init__(self, device: torch.device) -> None:
        # float64, as the Python floats these sums used to be: the same digits either way.
        self._loss = torch.zeros((), dtype=torch.float64, device=device)
        self._correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0
        self._shown_at = -math.inf

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        self._loss += loss.detach().double() * n  # mean batch loss x batch size
        self._correct += (logits.argmax(1) == labels).sum()
        self.seen += n

    @property
    def loss(self) -> float:
        return float(self._loss)

    @property
    def correct(self) -> int:
        return int(self._correct)

    def show(self, bar) -> None:
        """The running loss and accuracy on a visible bar, at most twice a second."""
        now = time.monotonic()
        if bar.disable or now - self._shown_at < 0.5:
            return
        self._shown_at = now
        bar.set_postfix(loss=f"{self.loss / self.seen:.3f}",
                        acc=f"{100 * self.correct / self.seen:.1f}")


@dataclass
class FitResult:
    epochs_run: int  # epochs trained in this call
    start_epoch: int  # 0, or the epoch a checkpoint resumed from
    last_loss: float | None = None
    last_train_accuracy: float | None = None


def make_optimizer(model: nn.Module, s: FitSettings):
    """(optimizer, scheduler) of ``s`` for ``model``'s trainable parameters."""
    return optimizers.make_optimizer(model, s.optimizer, s.lr, s.momentum, s.weight_decay,
                                     s.step_size, s.gamma, s.classifier_lr)


def check_finite_loss(loss: float, desc: str, epoch: int) -> None:
    """Fail clearly when training diverged, instead of saving a chance-level model."""
    if not math.isfinite(loss):
        raise QPMError(
            f"Training stage '{desc}' diverged: its loss became {loss} in epoch {epoch}.",
            "Re-run with a lower learning rate (--ft-lr for the fine-tuning stage, --lr for "
            "the dense one); the finished earlier stages are kept.")


@dataclass(frozen=True)
class Checkpoint:
    """A stage's epoch checkpoint: written by rank 0 after every epoch, read back by every rank
    on a restart if it was written for the same ``key`` (settings and inputs)."""

    path: Path
    key: dict

    def load(self, log: Callable[[str], None]) -> dict | None:
        if not self.path.exists():
            return None
        try:
            ckpt = load_checkpoint(self.path)
        except ArtifactError as exc:
            log(f"ignoring unreadable checkpoint ({exc.problem}); training from the start")
            return None
        if ckpt.get("key") != self.key:
            log(f"ignoring {self.path.name}: written for other settings; training from the start")
            return None
        return ckpt

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
               log: Callable[[str], None]) -> int:
        """Load a matching checkpoint into the objects; the epochs it had finished (0: none)."""
        ckpt = self.load(log)
        if ckpt is None:
            return 0
        load_trainable(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        return int(ckpt["epoch"])

    def save(self, epochs_done: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler) -> None:
        if dist.get_context().is_main:
            save_torch(self.path, {
                "key": self.key, "epoch": epochs_done,
                "model": {k: v.detach().cpu() for k, v in trainable_state(model).items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            })
        dist.barrier()


def fit(
    model: nn.Module,
    dataset: Dataset,
    settings: FitSettings,
    *,
    ckpt_path: str | Path,
    desc: str = "train",
    key: dict | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` (already on the context's device) in place for ``settings.epochs``.

    ``key`` identifies what is being trained; a checkpoint with another key is ignored.
    ``on_epoch_end(epochs_done)`` runs after each epoch's checkpoint is written.
    """
    ckpt = Checkpoint(Path(ckpt_path), {"settings": asdict(settings), **(key or {})})
    optimizer, scheduler = make_optimizer(model, settings)
    start = ckpt.resume(model, optimizer, scheduler, log)
    if start:
        log(f"{desc}: resuming from the checkpoint after epoch {start}/{settings.epochs}")
    result = FitResult(epochs_run=0, start_epoch=start)
    if start >= settings.epochs:
        optimizers.for_evaluation(optimizer)
        return result
    loader = train_loader(dataset, settings)
    dist.channels_last(model, dist.get_context().device)  # in place; GPU only
    with dist.batch_norm_over_processes(model):  # BatchNorm over the global batch
        net = dist.wrap_model(model)  # after the swap to SyncBatchNorm on NCCL
        for epoch in range(start, settings.epochs):
            totals = train_one_epoch(net, loader, optimizer, settings, epoch, desc)
            scheduler.step()
            end_epoch(result, totals, desc, epoch + 1, settings.epochs, log)
            ckpt.save(epoch + 1, model, optimizer, scheduler)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    optimizers.for_evaluation(optimizer)  # schedule-free: the averaged weights from here on
    # BatchNorm statistics drift apart across ranks; make every rank hold rank 0's model.
    dist.broadcast_state(model)
    return result


def train_loader(dataset: Dataset, settings: FitSettings) -> DataLoader:
    """This rank's shuffled, seeded loader of its share of the global batch."""
    # Dropping the ragged last batch keeps BatchNorm away from batches of one.
    drop_last = settings.drop_last and len(dataset) > settings.batch_size
    batch = dist.per_process_batch(settings.batch_size, dist.get_context().world_size)
    return dist.make_loader(dataset, batch, shuffle=True, seed=settings.seed,
                            workers=settings.workers, drop_last=drop_last)


def train_one_epoch(net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    settings: FitSettings, epoch: int, desc: str) -> EpochTotals:
    """One pass over ``loader`` (``epoch`` counts from 0): an optimisation step per batch."""
    ctx = dist.get_context()
    # Augmentation draws from the global RNG: seed it per epoch so a resume repeats it,
    # and per rank so processes do not draw the same augmentations (rank 0 = 1 process).
    torch.manual_seed(settings.seed * 100_003 + epoch + 7_919 * ctx.rank)
    dist.set_epoch(loader, epoch)
    net.train()
    optimizers.for_training(optimizer)
    totals = EpochTotals(ctx.device)
    bar = dist.main_only(loader, desc=f"{desc} epoch {epoch + 1}/{settings.epochs}",
                         leave=False, dynamic_ncols=True)
    for images, labels in bar:
        images = dist.channels_last(images.to(ctx.device, non_blocking=True), ctx.device)
        labels = labels.to(ctx.device, non_blocking=True)
        loss, logits = training_step(net, images, labels, settings.beta,
                                     settings.grounding_at(epoch), settings.l1_maps,
                                     settings.l1_features)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals.add(loss, logits, labels)
        totals.show(bar)
    bar.close()
    return totals


def training_step(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, beta: float,
                  grounding: float = 0.0, l1_maps: float = 0.0, l1_features: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's loss and logits: cross-entropy, plus ``beta`` x the feature-diversity
    loss, plus ``grounding`` x CHiQPM's Feature Grounding Loss, plus DINO-QPM's penalties
    against scattered and background evidence: ``l1_maps`` x the mean |value| of the final
    layer's feature maps and ``l1_features`` x the mean |pooled feature| of those features
    (the reference's get_l1_loss and get_l1_fv_loss)."""
    with dist.autocast_context(images.device):
        out = net(images)
        head = dist.unwrap(net).classifier
        weight, used = head.class_feature_weights()
        maps = out.feature_maps if used is None else out.feature_maps[:, used]
        loss = F.cross_entropy(out.logits.float(), labels)
        if beta > 0:
            loss = loss + diversity_loss(maps.float(), out.logits.float(), weight, beta)
        if grounding > 0:  # on the values this very forward pass fed the weights
            loss = loss + grounding * feature_grounding_loss(head.last_values.float(), labels,
                                                             weight)
        if l1_maps > 0:
            loss = loss + l1_maps * maps.float().abs().mean()
        if l1_features > 0:
            pooled = out.features if used is None else out.features[:, used]
            loss = loss + l1_features * pooled.float().abs().mean()
    return loss, out.logits


def end_epoch(result: FitResult, totals: EpochTotals, desc: str, epochs_done: int, epochs: int,
              log: Callable[[str], None]) -> None:
    """Reduce the epoch's sums over the ranks into ``result``, check them and log them."""
    seen = dist.all_reduce_sum(totals.seen)
    result.last_loss = dist.all_reduce_sum(totals.loss) / max(seen, 1)
    result.last_train_accuracy = 100.0 * dist.all_reduce_sum(totals.correct) / max(seen, 1)
    result.epochs_run += 1
    # Every rank holds the same reduced loss, so all raise together (no collective hangs);
    # raising before the checkpoint keeps the diverged weights out of the run folder.
    check_finite_loss(result.last_loss, desc, epochs_done)
    log(f"{desc} epoch {epochs_done}/{epochs}: loss {result.last_loss:.4f}, "
        f"train accuracy {result.last_train_accuracy:.2f}%")
