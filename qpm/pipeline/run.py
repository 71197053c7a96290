"""The stage runner: skip finished stages, recompute stale or corrupt ones, record everything.

One process at a time writes a run folder: it holds the folder's lock for the whole run
(:class:`qpm.run_folder.RunLock`). A stage counts as finished only if its artifact
loads and its record (``stages/<stage>.json`` in its folder) names the sha256 of that very
file and of the data and upstream artifacts it was computed from; anything else (a
hand-edited or copied artifact, a half-finished other run) is recomputed together with every
later stage, and so is every stage from ``force`` on. The model type's ``per_variant``
stages run in the variant folder of the config's setting, next to the other variants.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qpm import run_folder as rf
from qpm.errors import QPMError
from qpm.io import ArtifactError, read_json, write_json
from qpm.pipeline import distributed as dist
from qpm.pipeline.checks import check_before_training
from qpm.pipeline.stages import RunContext, Stage, pipeline_stages, variant_of
from qpm.pipeline.token_cache import backbone_inputs
from qpm.run_folder import StageRecord
from qpm.run_folder.config import TrainConfig, describe_diff

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
    variant_dir: Path  # where the model type's files are (the run folder in older layouts)
    stages: list[StageReport] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # the run's and the variant's

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


def merge_metrics(folder: Path, update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into ``folder``'s metrics.json one level deep (per model type)."""
    path = Path(folder) / rf.METRICS
    metrics = _merge(_read_optional(path, rf.METRICS, _log.warning), update)
    write_json(path, metrics)
    return metrics


def refuse_imported(run_dir: Path) -> None:
    """A folder holding a model imported by qpm import-reference is not trained into."""
    if not run_dir.is_dir():
        return
    for model in rf.finished_models(run_dir):
        source = rf.imported_from(model.folder, model.model_type)
        if source:
            raise QPMError(
                f"Run folder {run_dir} holds {model.file.name} imported from {source}; "
                "qpm train would mix it with what it trains.",
                "Use qpm evaluate, explain or predict on it, or train in a new --run-dir.")


def check_compatible(cfg: TrainConfig, stages: list[Stage], records: dict, run_dir: Path,
                     force: str | None = None) -> None:
    """Refuse to mix: a model imported by qpm import-reference, or a finished stage before
    ``force`` whose recorded fields differ from ``cfg``'s."""
    refuse_imported(run_dir)
    for stage in stages:
        if stage.name == force:
            return
        rec = records[stage.name][0]
        if rec is None or not stage.path(run_dir).exists():
            continue
        old, new = rec.fields, cfg.fingerprint(stage.fields)
        if old != new:
            raise QPMError(
                f"Run folder {run_dir} holds {stage.artifact} made with a different config "
                f"({describe_diff(old, new)}).",
                f"Recompute it and what follows with --force {stage.name}, or start fresh "
                "with --run-dir NEW_DIR.")


def run_pipeline(config: TrainConfig, *, log: Callable[[str], None] = _log.info,
                 on_epoch_end: Callable[[str, int], None] | None = None, glm: Any = None,
                 force: str | None = None, notes: list[str] | tuple[str, ...] = ()
                 ) -> RunSummary:
    """Run (or resume) every stage of ``config.model_type`` in its run folder.

    ``force`` names a stage to recompute with every later one; ``on_epoch_end(stage, epochs
    done)`` runs after each training epoch; ``glm`` is the baselines' glm-saga settings;
    ``notes`` are lines to print once every check has passed (with the run's own: the
    recipe chosen, the n chosen), so that bad input stays one line.
    """
    from qpm.models.backbones import weights_on_disk
    from qpm.run_folder.recipes import choose_recipe

    notes = list(notes)
    if config.recipe is None:  # the starting point chooses it; say which and why
        choice = choose_recipe(config.dataset, config.arch, config.weights, weights_on_disk,
                               config.frozen_backbone)
        notes.append(f"recipe {choice.name}: {choice.reason} (--recipe to choose another)")
        config = replace(config, recipe=choice.name)
    cfg = config.resolve()
    dctx = dist.get_context(cfg.device)
    if not dctx.is_main:
        log = _quiet
    stages = pipeline_stages(cfg)
    names = [s.name for s in stages]
    if force is not None and force not in names:
        raise QPMError(f"--force {force}: model type {cfg.model_type} has no stage {force!r}.",
                       f"Choose one of: {', '.join(names)}.")
    run_dir = Path(cfg.run_dir)
    refuse_imported(run_dir)  # before its recorded settings (the checkpoint as --weights) fail
    ctx = RunContext(cfg, run_dir, log, on_epoch_end, glm)
    dist.per_process_batch(cfg.batch_size, dctx.world_size)  # fail before any work
    cfg = ctx.config = check_before_training(cfg, ctx, notes)
    # Rank 0 holds the lock; every rank must learn of a refusal (else collectives hang).
    lock, refused = None, None
    if dctx.is_main:
        try:
            lock = rf.claim(run_dir)  # a run folder, or a new or empty one: no one else's
            rf.check_files(run_dir)
        except QPMError as exc:
            refused = (exc.problem, exc.fix)
            if lock is not None:
                lock.release()
    refused = dist.broadcast_object(refused)
    if refused:
        raise QPMError(*refused)
    try:
        return _run_locked(cfg, ctx, stages, force, log, notes)
    finally:
        if lock is not None:
            lock.release()


def variant_folder(cfg: TrainConfig, stages: list[Stage], run_dir: Path) -> str:
    """The folder of the config's variant, relative to the run folder: ``variants/<name>``,
    or the run folder itself when it was written before variants and its top-level model
    type files are this very setting (they are then used, and kept, in place)."""
    rel = rf.relative_dir(variant_of(cfg))
    first = next((s for s in stages if s.per_variant), None)
    if first is None or (run_dir / rel).is_dir() or not (run_dir / first.artifact).exists():
        return rel
    rec, _ = rf.read_record(run_dir, first.name)
    if rec is not None and rec.fields == cfg.fingerprint(first.fields):
        return ""
    return rel


def _prepare_folder(cfg: TrainConfig, ctx: RunContext, log: Callable[[str], None]) -> str:
    """Rank 0, under the lock: clean up, check and record the data; returns the data hash."""
    run_dir = ctx.run_dir
    for path in rf.remove_stale_temporaries(run_dir):
        log(f"removed {path.relative_to(run_dir)}, left by a writer that was killed")
    fingerprint = rf.data_fingerprint(ctx.data(), cfg.data_root)
    rewrite = rf.check_data(run_dir, fingerprint, cfg.data_root, fresh_ok=True)
    write_json(run_dir / rf.CONFIG, cfg.to_dict())  # first: from now on it is a run folder
    if rewrite:
        write_json(run_dir / rf.DATA, fingerprint)
    if ctx.variant_dir != run_dir:  # the variant's own settings, for whoever reads it later
        write_json(ctx.variant_dir / rf.CONFIG, cfg.to_dict())
    return rf.fingerprint_hash(fingerprint)


def _run_locked(cfg: TrainConfig, ctx: RunContext, stages: list[Stage], force: str | None,
                log: Callable[[str], None], notes: list[str]) -> RunSummary:
    from qpm.run_folder.recipes import describe

    run_dir, is_main = ctx.run_dir, ctx.is_main
    # Every rank must take the same branches below (else collectives deadlock): use rank 0's
    # view of the run folder, which may differ on a lagging network file system.
    folder = dist.broadcast_object(variant_folder(cfg, stages, run_dir) if is_main else None)
    stages = [replace(s, folder=folder) if s.per_variant else s for s in stages]
    ctx.variant_dir = run_dir / folder
    records = dist.broadcast_object(
        {s.name: rf.read_record(run_dir / s.folder, s.name) for s in stages} if is_main
        else None)
    check_compatible(cfg, stages, records, run_dir, force)
    data_hash = dist.run_on_main(lambda c: _prepare_folder(cfg, c, log), ctx,
                                 what="checking the run folder")
    data_hash = dist.broadcast_object(data_hash)
    for note in notes:
        log(note)
    log(describe(cfg))  # what this run trains (also in config.json)
    if folder:
        log(f"variant {folder.split('/')[-1]} ({folder}/)")
    summary = RunSummary(run_dir, cfg, ctx.variant_dir)
    # A frozen backbone's weights file counts as an input like the data (token_cache).
    upstream: dict[str, str] = {"data": data_hash, **backbone_inputs(cfg)}
    dirty = False
    for i, stage in enumerate(stages):
        dirty = dirty or stage.name == force
        if dirty and stage.name == force:
            log(f"[{stage.name}] --force: recomputing it and every later stage")
        done = _finished(cfg, ctx, stage, stages[i + 1:], records, upstream, dirty, log)
        if done is not None:
            summary.stages.append(StageReport(stage.name, stage.artifact, "skipped",
                                              done.seconds))
            upstream[stage.artifact] = done.output
            continue
        dirty = True
        upstream[stage.artifact] = _compute(cfg, ctx, stage, upstream, summary, log)
    dist.barrier()
    summary.metrics = recorded_metrics(run_dir, stages)
    return summary


def recorded_metrics(run_dir: Path, stages: list[Stage]) -> dict[str, Any]:
    """The metrics and seconds the stages' records state: what a summary reports (a
    metrics.json is a copy for people and may have been edited since)."""
    metrics: dict[str, Any] = {"seconds": {}}
    for stage in stages:
        rec, _ = rf.read_record(run_dir / stage.folder, stage.name)
        if rec is None:
            continue
        _merge(metrics, rec.extra.get("metrics") or {})
        if rec.seconds is not None:
            metrics["seconds"][stage.name] = round(rec.seconds, 3)
    return metrics


def _merge(metrics: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``metrics`` one level deep (per model type)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(metrics.get(key), dict):
            metrics[key].update(value)
        else:
            metrics[key] = value
    return metrics


def _finished(cfg: TrainConfig, ctx: RunContext, stage: Stage, later: list[Stage],
              records: dict, upstream: dict[str, str], dirty: bool,
              log: Callable[[str], None]) -> StageRecord | None:
    """The record of ``stage`` when its artifact is finished and re-usable, else None."""
    run_dir, is_main = ctx.run_dir, ctx.is_main
    rec = None
    exists = not dirty and stage.path(run_dir).exists()
    reason = None
    if exists and is_main:
        rec, reason = _check_finished(cfg, stage, later, records, upstream, log)
    exists, reason, rec = dist.broadcast_object((exists, reason, rec))
    if not exists:
        return None
    if reason is not None:
        log(f"[{stage.name}] {reason}; recomputing it and every later stage")
        return None
    log(f"[{stage.name}] {stage.artifact} is finished; skipping")
    folder = run_dir / stage.folder
    stated = rec.extra.get("metrics") or {}
    if is_main and stated and not _metrics_state(folder, stated):  # lost, broken or edited
        merge_metrics(folder, stated)
    if is_main and stage.figure and not (folder / stage.figure).exists():
        _draw(stage, ctx, log)
    return rec


def _compute(cfg: TrainConfig, ctx: RunContext, stage: Stage, upstream: dict[str, str],
             summary: RunSummary, log: Callable[[str], None]) -> str:
    """Run ``stage``, record it and draw its picture; returns its artifact's sha256."""
    run_dir, is_main = ctx.run_dir, ctx.is_main
    folder = run_dir / stage.folder
    log(f"[{stage.name}] computing {stage.artifact}")
    # What this stage's result depends on: a training checkpoint made for anything else
    # (other settings, other upstream artifacts) must not be resumed.
    fields = cfg.fingerprint(stage.fields)
    ctx.identity = {"fields": fields, "inputs": dict(upstream)}
    ctx.folder = folder
    start = time.perf_counter()
    if stage.main_only:  # the other ranks wait (and stop if rank 0 fails)
        update = dist.run_on_main(stage.run, ctx, what=f"stage {stage.name}")
    else:
        update = stage.run(ctx)
    seconds = time.perf_counter() - start
    output = dist.broadcast_object(rf.file_hash(stage.path(run_dir)) if is_main else None)
    if is_main:
        rf.write_record(folder, StageRecord(stage.name, stage.artifact, fields, dict(upstream),
                                            output, seconds, {"metrics": update or {}}))
        merge_metrics(folder, {**(update or {}), "seconds": {stage.name: round(seconds, 3)}})
    summary.stages.append(StageReport(stage.name, stage.artifact, "ran", seconds))
    log(f"[{stage.name}] done in {seconds:.1f}s")
    if is_main:  # only now: the stage's result is safe whatever the drawing does
        _draw(stage, ctx, log)
    return output


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


def _metrics_state(folder: Path, stated: dict[str, Any]) -> bool:
    """Whether ``folder``'s metrics.json holds the values a stage record states."""
    try:
        metrics = read_json(folder / rf.METRICS)
    except ArtifactError:
        return False
    if not isinstance(metrics, dict):
        return False
    return all(
        isinstance(metrics.get(k), dict) and all(metrics[k].get(i) == w for i, w in v.items())
        if isinstance(v, dict) else metrics.get(k) == v for k, v in stated.items())


def _check_finished(cfg: TrainConfig, stage: Stage, later: list[Stage], records: dict,
                    upstream: dict[str, str], log: Callable[[str], None]
                    ) -> tuple[StageRecord | None, str | None]:
    """(record, None) if ``stage``'s artifact can be re-used, else (record or None, why not).

    Without a usable record of its own, a later stage's record that was computed from this
    very file (same hash, same inputs, same settings) vouches for it and the record is
    rebuilt: an unreadable record does not cost a finished training.
    """
    run_dir = Path(cfg.run_dir)
    path = stage.path(run_dir)
    rec, why = records[stage.name]
    digest = rf.file_hash(path)
    if rec is None:
        rec = _vouched(cfg, stage, later, records, upstream, digest)
        if rec is None:
            return None, f"{stage.artifact} has no usable record ({why})"
        rf.write_record(run_dir / stage.folder, rec)
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
