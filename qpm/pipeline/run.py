"""The stage runner: skip finished stages, recompute stale or corrupt ones, record everything.

One process at a time writes a run folder: it holds the folder's lock for the whole run
(:class:`qpm.pipeline.run_folder.RunLock`). A stage counts as finished only if its artifact
loads and its record (``stages/<stage>.json``) names the sha256 of that very file and of the
data and upstream artifacts it was computed from; anything else (a hand-edited or copied
artifact, a half-finished other run) is recomputed together with every later stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qpm.errors import QPMError
from qpm.pipeline import distributed as dist
from qpm.pipeline import run_folder as rf
from qpm.pipeline.artifacts import ArtifactError, read_json, write_json
from qpm.pipeline.config import TrainConfig, describe_diff
from qpm.pipeline.run_folder import StageRecord
from qpm.pipeline.stages import RunContext, Stage, pipeline_stages

_log = logging.getLogger("qpm.train")


@dataclass
class StageReport:
    name: str
    artifact: str
    status: str  # "ran" or "skipped"
    seconds: float | None  # this run's time, or the recorded time of a skipped stage


@dataclass
class RunSummary:
    run_dir: Path
    config: TrainConfig
    stages: list[StageReport] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def status(self, name: str) -> str | None:
        return next((s.status for s in self.stages if s.name == name), None)


def _read_optional(path: Path, what: str, log: Callable[[str], None]) -> dict:
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except ArtifactError as exc:
        log(f"{what} is unreadable ({exc.problem}); ignoring it")
        return {}
    return data if isinstance(data, dict) else {}


def merge_metrics(run_dir: Path, update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into metrics.json one level deep (per model type) and write it."""
    path = Path(run_dir) / rf.METRICS
    metrics = _read_optional(path, rf.METRICS, _log.warning)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(metrics.get(key), dict):
            metrics[key].update(value)
        else:
            metrics[key] = value
    write_json(path, metrics)
    return metrics


def check_compatible(cfg: TrainConfig, stages: list[Stage], records: dict, run_dir: Path) -> None:
    """Refuse to mix: a finished stage whose recorded fields differ from ``cfg``'s, or a model
    imported by qpm import-reference (training would replace it)."""
    for i, stage in enumerate(stages):
        rec = records[stage.name][0]
        if rec is None or not (run_dir / stage.artifact).exists():
            continue
        if rec.extra.get("imported_from"):
            raise QPMError(
                f"Run folder {run_dir} holds {stage.artifact} imported from "
                f"{rec.extra['imported_from']}; qpm train would replace it.",
                "Use qpm evaluate, explain or predict on it, or train in a new --run-dir.")
        old, new = rec.fields, cfg.fingerprint(stage.fields)
        if old != new:
            later = [s.artifact for s in stages[i:] if (run_dir / s.artifact).exists()]
            raise QPMError(
                f"Run folder {run_dir} holds {stage.artifact} made with a different config "
                f"({describe_diff(old, new)}).",
                f"Start fresh with --run-dir NEW_DIR, delete {run_dir}, or delete "
                f"{', '.join(later)} there to recompute only from {stage.name} on.",
            )


def _check_static(cfg: TrainConfig, ctx: RunContext) -> None:
    """Cheap checks before any training: data readable, feature counts possible."""
    from math import comb

    from qpm.models.backbones import check_weights

    data = ctx.data()  # a missing or malformed dataset fails here, not after training
    if data.num_classes < 2:
        raise QPMError(f"Dataset {cfg.dataset} has {data.num_classes} class; a classifier "
                       "needs at least 2.", "Point --data-root at a folder with 2 or more "
                       "class folders.")
    check_weights(cfg.arch, cfg.weights)
    if not cfg.dense_training and cfg.weights in (None, "", "none"):
        raise QPMError("--no-dense-training uses the pretrained model as the dense model, but "
                       "no weights are given.", "Pass --weights (e.g. IMAGENET1K_V1).")
    n_total = _probe_backbone(cfg, data.in_channels)
    if cfg.n_features > n_total:
        raise QPMError(f"--n-features {cfg.n_features} is larger than the {n_total} "
                       f"features of {cfg.arch}.", f"Use --n-features {n_total} or fewer.")
    if cfg.per_class > cfg.n_features:
        raise QPMError(f"--per-class {cfg.per_class} is larger than --n-features "
                       f"{cfg.n_features}.", "Lower --per-class or raise --n-features.")
    if cfg.model_type == "qpm":
        from qpm.assignment.backends import get_backend
        from qpm.assignment.presets import get_preset

        get_backend(cfg.solver)  # an unknown --solver fails now, not after training

        unique = get_preset(cfg.preset).rules.unique_columns  # also rejects unknown presets
        if unique and comb(cfg.n_features, cfg.per_class) < data.num_classes:
            raise QPMError(
                f"{data.num_classes} classes cannot get distinct sets of {cfg.per_class} of "
                f"{cfg.n_features} features.", "Raise --n-features or --per-class.")


def _probe_backbone(cfg: TrainConfig, in_channels: int) -> int:
    """The backbone's feature count, after one forward pass at --image-size (a size too
    small for its downsampling fails here, not in the first training step)."""
    import torch

    from qpm.models.backbones import create_backbone

    model = create_backbone(cfg.arch, "none", cfg.reduced_strides, in_channels, 2).eval()
    size = int(cfg.image_size)
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QPMError(f"--image-size {size} is too small for {cfg.arch} ({first}).",
                       "Pass a larger --image-size, e.g. 32 for small-cnn or 224 for a "
                       "ResNet.") from None
    return model.n_features


def run_pipeline(config: TrainConfig, *, log: Callable[[str], None] = _log.info,
                 hooks: dict[str, Callable] | None = None) -> RunSummary:
    """Run (or resume) every stage of ``config.model_type`` in its run folder."""
    cfg = config.resolve()
    dctx = dist.get_context(cfg.device)
    if not dctx.is_main:
        log = _quiet
    stages = pipeline_stages(cfg.model_type)
    run_dir = Path(cfg.run_dir)
    ctx = RunContext(cfg, run_dir, log, dict(hooks or {}))
    dist.per_process_batch(cfg.batch_size, dctx.world_size)  # fail before any work
    _check_static(cfg, ctx)
    lock = rf.RunLock(run_dir)
    # Rank 0 holds the lock; every rank must learn of a refusal (else collectives hang).
    refused = None
    if dctx.is_main:
        try:
            lock.acquire()
        except QPMError as exc:
            refused = (exc.problem, exc.fix)
    refused = dist.broadcast_object(refused)
    if refused:
        raise QPMError(*refused)
    try:
        return _run_locked(cfg, ctx, stages, log)
    finally:
        lock.release()


def _prepare_folder(cfg: TrainConfig, ctx: RunContext, log: Callable[[str], None]) -> str:
    """Rank 0, under the lock: clean up, check and record the data; returns the data hash."""
    run_dir = ctx.run_dir
    for path in rf.remove_stale_temporaries(run_dir):
        log(f"removed {path.relative_to(run_dir)}, left by a writer that was killed")
    fingerprint = rf.data_fingerprint(ctx.data(), cfg.data_root)
    if rf.check_data(run_dir, fingerprint, cfg.data_root):
        write_json(run_dir / rf.DATA, fingerprint)
    write_json(run_dir / rf.CONFIG, cfg.to_dict())
    return rf.fingerprint_hash(fingerprint)


def _run_locked(cfg: TrainConfig, ctx: RunContext, stages: list[Stage],
                log: Callable[[str], None]) -> RunSummary:
    from qpm.pipeline.recipes import describe

    run_dir, is_main = ctx.run_dir, ctx.is_main
    # Every rank must take the same branches below (else collectives deadlock): use rank 0's
    # view of the run folder, which may differ on a lagging network file system.
    records = dist.broadcast_object(
        {s.name: rf.read_record(run_dir, s.name) for s in stages} if is_main else None)
    check_compatible(cfg, stages, records, run_dir)
    data_hash = dist.run_on_main(lambda c: _prepare_folder(cfg, c, log), ctx,
                                 what="checking the run folder")
    data_hash = dist.broadcast_object(data_hash)
    log(describe(cfg))  # what this run trains (also in config.json)
    metrics_ok = is_main and _metrics_readable(run_dir)
    summary = RunSummary(run_dir, cfg)
    dirty = False
    upstream: dict[str, str] = {"data": data_hash}
    for i, stage in enumerate(stages):
        path = run_dir / stage.artifact
        rec, why = records[stage.name]
        exists = not dirty and path.exists()
        reason = None
        if exists and is_main:
            rec, reason = _check_finished(cfg, stage, stages[i + 1:], records, upstream, log)
        exists, reason, rec = dist.broadcast_object((exists, reason, rec))
        if exists:
            if reason is None:
                log(f"[{stage.name}] {stage.artifact} is finished; skipping")
                summary.stages.append(StageReport(stage.name, stage.artifact, "skipped",
                                                  rec.seconds))
                upstream[stage.artifact] = rec.output
                if is_main and not metrics_ok and rec.extra.get("metrics"):
                    merge_metrics(run_dir, rec.extra["metrics"])  # metrics.json was lost
                if is_main and stage.figure and not (run_dir / stage.figure).exists():
                    _draw(stage, ctx, log)
                continue
            log(f"[{stage.name}] {reason}; recomputing it and every later stage")
        dirty = True
        log(f"[{stage.name}] computing {stage.artifact}")
        # What this stage's result depends on: a training checkpoint made for anything else
        # (other settings, other upstream artifacts) must not be resumed.
        fields = cfg.fingerprint(stage.fields)
        ctx.identity = {"fields": fields, "inputs": dict(upstream)}
        start = time.perf_counter()
        if stage.main_only:  # the other ranks wait (and stop if rank 0 fails)
            update = dist.run_on_main(stage.run, ctx, what=f"stage {stage.name}")
        else:
            update = stage.run(ctx)
        seconds = time.perf_counter() - start
        output = dist.broadcast_object(rf.file_hash(path) if is_main else None)
        if is_main:
            rf.write_record(run_dir, StageRecord(stage.name, stage.artifact, fields,
                                                 dict(upstream), output, seconds,
                                                 {"metrics": update or {}}))
            merge_metrics(run_dir, {**(update or {}), "seconds": {stage.name: round(seconds, 3)}})
        upstream[stage.artifact] = output
        summary.stages.append(StageReport(stage.name, stage.artifact, "ran", seconds))
        log(f"[{stage.name}] done in {seconds:.1f}s")
        if is_main:  # only now: the stage's result is safe whatever the drawing does
            _draw(stage, ctx, log)
    dist.barrier()
    summary.metrics = _read_optional(run_dir / rf.METRICS, rf.METRICS, log)
    return summary


def _draw(stage: Stage, ctx: RunContext, log: Callable[[str], None]) -> None:
    """Draw a finished stage's picture; a failure is one line, the stage stays finished."""
    if stage.draw is None:
        return
    try:
        stage.draw(ctx)
    except Exception as exc:  # noqa: BLE001 - a picture must never cost the stage's result
        from qpm.text import printable

        log(f"[{stage.name}] could not draw {stage.figure} ({type(exc).__name__}: "
            f"{printable(exc)}); {stage.artifact} is kept")


def _metrics_readable(run_dir: Path) -> bool:
    try:
        return isinstance(read_json(run_dir / rf.METRICS), dict)
    except ArtifactError:
        return False


def _check_finished(cfg: TrainConfig, stage: Stage, later: list[Stage], records: dict,
                    upstream: dict[str, str], log: Callable[[str], None]
                    ) -> tuple[StageRecord | None, str | None]:
    """(record, None) if ``stage``'s artifact can be re-used, else (record or None, why not).

    Without a usable record of its own, a later stage's record that was computed from this
    very file (same hash, same inputs, same settings) vouches for it and the record is
    rebuilt: an unreadable record does not cost a finished training.
    """
    run_dir = Path(cfg.run_dir)
    path = run_dir / stage.artifact
    rec, why = records[stage.name]
    digest = rf.file_hash(path)
    if rec is None:
        rec = _vouched(cfg, stage, later, records, upstream, digest)
        if rec is None:
            return None, f"{stage.artifact} has no usable record ({why})"
        rf.write_record(run_dir, rec)
        log(f"[{stage.name}] rebuilt its record from a later stage's record")
    if rec.inputs != upstream:
        changed = sorted(k for k in set(rec.inputs) | set(upstream)
                         if rec.inputs.get(k) != upstream.get(k))
        return rec, f"{stage.artifact} was computed from other {', '.join(changed)}"
    try:
        stage.validate(path)
    except ArtifactError as exc:
        return rec, f"{stage.artifact} is corrupt ({exc.problem})"
    if digest != rec.output:
        return rec, (f"{stage.artifact} changed after its stage finished (edited, or copied "
                     "from another run)")
    return rec, None


def _vouched(cfg: TrainConfig, stage: Stage, later: list[Stage], records: dict,
             upstream: dict[str, str], digest: str) -> StageRecord | None:
    fields = cfg.fingerprint(stage.fields)
    for other in later:
        rec = records[other.name][0]
        if (rec is not None and rec.inputs.get(stage.artifact) == digest
                and all(rec.inputs.get(k) == v for k, v in upstream.items())
                and all(rec.fields.get(k) == v for k, v in fields.items())):
            return StageRecord(stage.name, stage.artifact, fields, dict(upstream), digest)
    return None


def _quiet(_: str) -> None:
    pass
