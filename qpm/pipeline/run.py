"""The stage runner: skip finished stages, recompute stale or corrupt ones, record everything.

stages.json records, per finished stage, the config fields it depends on, its seconds and a
token; a stage counts as finished only if its artifact loads, its record exists and the
tokens of the stages before it are the ones it was built on (so re-running the dense stage
also re-runs everything after it, for every model type).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qpm.errors import QPMError
from qpm.pipeline import distributed as dist
from qpm.pipeline.artifacts import ArtifactError, read_json, write_json
from qpm.pipeline.config import TrainConfig, describe_diff
from qpm.pipeline.stages import RunContext, Stage, pipeline_stages

RECORDS = "stages.json"


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
    path = Path(run_dir) / "metrics.json"
    metrics = _read_optional(path, "metrics.json", print)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(metrics.get(key), dict):
            metrics[key].update(value)
        else:
            metrics[key] = value
    write_json(path, metrics)
    return metrics


def check_compatible(cfg: TrainConfig, stages: list[Stage], records: dict, run_dir: Path) -> None:
    """Refuse to mix: a finished stage whose recorded fields differ from ``cfg``'s."""
    for i, stage in enumerate(stages):
        rec = records.get(stage.name)
        if rec is None or not (run_dir / stage.artifact).exists():
            continue
        old, new = rec.get("fields", {}), cfg.fingerprint(stage.fields)
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

    from qpm.models.backbones import backbone_feature_count, check_weights

    data = ctx.data()  # a missing or malformed dataset fails here, not after training
    check_weights(cfg.arch, cfg.weights)
    n_total = backbone_feature_count(cfg.arch, data.in_channels)
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


def run_pipeline(config: TrainConfig, *, log: Callable[[str], None] = print,
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
    records_path = run_dir / RECORDS
    # Every rank must take the same branches below (else collectives deadlock): use rank 0's
    # view of the run folder, which may differ on a lagging network file system.
    records = dist.broadcast_object(_read_optional(records_path, RECORDS, log))
    check_compatible(cfg, stages, records, run_dir)
    if dctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", cfg.to_dict())
    summary = RunSummary(run_dir, cfg)
    dirty = False
    upstream: list[str] = []
    for stage in stages:
        path = run_dir / stage.artifact
        rec = records.get(stage.name)
        reason = None
        exists = not dirty and path.exists()
        if exists:
            reason = _why_stale(stage, path, rec, upstream)
        exists, reason = dist.broadcast_object((exists, reason))
        if exists:
            if reason is None:
                log(f"[{stage.name}] {stage.artifact} is finished; skipping")
                summary.stages.append(StageReport(stage.name, stage.artifact, "skipped",
                                                  rec.get("seconds")))
                upstream.append(rec["token"])
                continue
            log(f"[{stage.name}] {reason}; recomputing it and every later stage")
        dirty = True
        log(f"[{stage.name}] computing {stage.artifact}")
        # What this stage's result depends on: a training checkpoint made for anything else
        # (other settings, other upstream artifacts) must not be resumed.
        ctx.identity = {"fields": cfg.fingerprint(stage.fields), "upstream": list(upstream)}
        start = time.perf_counter()
        if stage.main_only:  # the other ranks wait (and stop if rank 0 fails)
            update = dist.run_on_main(stage.run, ctx, what=f"stage {stage.name}")
        else:
            update = stage.run(ctx)
        seconds = time.perf_counter() - start
        token = str(dist.broadcast_object(uuid.uuid4().hex))
        records[stage.name] = {"artifact": stage.artifact, "fields": cfg.fingerprint(stage.fields),
                               "seconds": seconds, "token": token, "upstream": list(upstream)}
        upstream.append(token)
        if dctx.is_main:
            write_json(records_path, records)
            merge_metrics(run_dir, {**(update or {}), "seconds": {stage.name: round(seconds, 3)}})
        summary.stages.append(StageReport(stage.name, stage.artifact, "ran", seconds))
        log(f"[{stage.name}] done in {seconds:.1f}s")
    dist.barrier()
    summary.metrics = _read_optional(run_dir / "metrics.json", "metrics.json", log)
    return summary


def _why_stale(stage: Stage, path: Path, rec: dict | None, upstream: list[str]) -> str | None:
    """None if ``stage``'s artifact can be re-used, else why not."""
    if rec is None or "token" not in rec:
        return f"{stage.artifact} has no record in {RECORDS}"
    if rec.get("upstream") != upstream:
        return f"{stage.artifact} was built from older upstream artifacts"
    try:
        stage.validate(path)
    except ArtifactError as exc:
        return f"{stage.artifact} is corrupt ({exc.problem})"
    return None


def _quiet(_: str) -> None:
    pass
