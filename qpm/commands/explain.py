"""``qpm explain RUN_DIR``: explanation.json, comparison figures, a feature gallery and a
static index.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from qpm import logs
from qpm.commands._common import (
    add_run_folder_arguments,
    add_variant_argument,
    check_run_folder_arguments,
)
from qpm.run_folder import holding_lock

log = logs.get("explain")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain",
        help="global explanation of a trained model: JSON, figures and an HTML page",
        description="Write explanation.json (every class with its features, the pairs of "
        "classes that share all but one feature and the features that distinguish them), "
        "class-comparison figures (an example image of each class with each feature's "
        "activation map), a feature gallery (the training images that activate each "
        "feature most) and a static index.html that opens in any browser without network.",
    )
    add_run_folder_arguments(p)
    p.add_argument("--model-type", metavar="NAME",
                   help="which model to explain: qpm, qsenn or sldd (default: qpm if "
                   "finished, else the first finished of the others)")
    add_variant_argument(p)
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="where the comparison figures' example images come from (default: "
                   "test; the gallery always shows training images)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: explain/ next to the model file)")
    p.add_argument("--max-figures", type=int, default=60,
                   help="comparison figures to draw at most (default 60)")
    p.add_argument("--gallery-size", type=int, default=6,
                   help="training images per feature in the gallery (default 6)")
    p.add_argument("--local-examples", type=int, default=6, metavar="N",
                   help="local explanations with CHiQPM's tree of class paths on the page "
                   "(binary layers with k features per class; default 6, 0: none)")
    return p


@holding_lock
def run(args: argparse.Namespace) -> int:
    from qpm import run_folder as rf
    from qpm.commands._hierarchy import local_examples
    from qpm.data import build_data
    from qpm.errors import QPMError
    from qpm.explain import choose_examples, plot_assignment, write_explanations
    from qpm.inference import load
    from qpm.inference.scan import scan_dataset
    from qpm.io import check_output_folder
    from qpm.text import printable

    check_run_folder_arguments(args)
    if args.max_figures < 0 or args.gallery_size < 1 or args.local_examples < 0:
        raise QPMError("--max-figures and --local-examples must be >= 0 and --gallery-size "
                       "positive.", "Pass e.g. --max-figures 60 --gallery-size 6.")
    run = rf.open_run(args.run_dir, args.data_root)
    sparse = sorted((t for t in run.types() if t != "dense"), key=lambda t: t != "qpm")
    mt = args.model_type or (sparse[0] if sparse else None)
    if mt is None or mt == "dense":
        raise QPMError(f"{run.path} holds no sparse model (qpm, qsenn or sldd) to "
                       "explain.", "Finish one first: qpm train [--model-type qsenn|sldd].")
    found = run.find(mt, args.variant)
    out_dir = Path(args.out) if args.out else _default_out(run, found)
    check_output_folder(out_dir, "--out")
    c = run.config
    model = load(run.path, mt, args.device, variant=found.variant)  # checks the model file
    data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt)
    rf.check_data(run.path, rf.data_fingerprint(data, c.data_root), args.data_root)
    weight, sel = model.layer()
    splits = {"train": data.train_eval, "test": data.test}
    log.info(f"scanning the {args.split} images ...")
    scans = {args.split: scan_dataset(model, splits[args.split], args.batch_size)}
    if "train" not in scans:
        log.info("scanning the train images for the gallery ...")
        scans["train"] = scan_dataset(model, splits["train"], args.batch_size)
    ex = scans[args.split]
    examples = {cls: (args.split, i) for cls, i in
                choose_examples(ex.labels, ex.logits, ex.quality).items()}
    gallery = _gallery(scans["train"], weight, sel, model.class_names, args.gallery_size)
    wanted = set(examples.values()) | {g.key for gs in gallery.values() for g in gs}
    images, maps = _render(model, splits, wanted, args.batch_size)
    log.info("drawing local explanations ...")
    local = local_examples(model, splits, examples, out_dir, args.local_examples,
                           args.batch_size)
    paths = write_explanations(
        out_dir, weight, sel, model.class_names, examples=examples, images=images, maps=maps,
        gallery=gallery, model_type=mt,
        title=f"{mt.upper()} on {c.dataset}: global explanation",
        max_figures=args.max_figures, local=local,
        extra={"run_dir": printable(run.path), "variant": found.variant, "split": args.split,
               "accuracy": model.meta.get("accuracy")},
    )
    plot = found.folder / rf.plot_file(mt)
    if not plot.exists():
        plot_assignment(weight, sel, model.class_names, plot)
    counts = model.global_explanation().counts
    n_fig = len(list((out_dir / "figures").glob("*.png"))) if (out_dir / "figures").exists() else 0
    print(f"explanation of {found.label}: {printable(paths['json'])}")
    print(f"{mt}: {counts.line()}")
    if counts.warning():
        print(counts.warning())
    print(f"page: {printable(paths['html'])} ({n_fig} comparison figures, "
          f"{len(gallery)} gallery rows)")
    return 0


def _default_out(run, found) -> Path:
    """explain/ in the variant's folder; RUN_DIR/explain/TYPE for a top-level model."""
    from qpm import run_folder as rf

    if found.folder == run.path:
        return run.path / rf.EXPLAIN / found.model_type
    return found.folder / rf.EXPLAIN


def _gallery(train, weight, sel, names: list[str], size: int) -> dict:
    """Feature -> the training images that activate it most (used features only)."""
    from qpm.explain import top_activating
    from qpm.explain.writer import GalleryImage

    used = [j for j in range(len(sel)) if weight[:, j].any()]
    top = top_activating(train.pooled[:, used], size)
    return {int(sel[j]): [GalleryImage(("train", int(i)), names[train.labels[i]],
                                       {"split": "train", "index": int(i),
                                        "class": int(train.labels[i]),
                                        "activation": float(train.pooled[i, j])})
                          for i in row] for j, row in zip(used, top, strict=True)}


def _render(model, splits: dict, wanted: set, batch_size: int) -> tuple[dict, dict]:
    """Displayable images and feature maps of the ``wanted`` (split, index) images."""
    from qpm.inference.scan import render

    images, maps = {}, {}
    for split in ("train", "test"):
        idx = sorted(i for s, i in wanted if s == split)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            ims, ms = render(model, splits[split], chunk)
            images.update({(split, i): im for i, im in zip(chunk, ims, strict=True)})
            maps.update({(split, i): m for i, m in zip(chunk, ms, strict=True)})
    return images, maps
