"""``qpm explain RUN_DIR``: explanation.json, comparison figures, a feature gallery and a
static index.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qpm.commands._common import add_run_folder_arguments, check_run_folder_arguments
from qpm.pipeline.run_folder import holding_lock

SPARSE_TYPES = ("qpm", "qsenn", "sldd")


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
    p.add_argument("--model-type", choices=SPARSE_TYPES,
                   help="which model to explain (default: the first finished of qpm, qsenn, "
                   "sldd)")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="where the comparison figures' example images come from (default: "
                   "test; the gallery always shows training images)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/explain/TYPE)")
    p.add_argument("--max-figures", type=int, default=60,
                   help="comparison figures to draw at most (default 60)")
    p.add_argument("--gallery-size", type=int, default=6,
                   help="training images per feature in the gallery (default 6)")
    return p


@holding_lock
def run(args: argparse.Namespace) -> int:
    from qpm.errors import QPMError
    from qpm.explain import choose_examples, plot_assignment, top_activating, write_explanations
    from qpm.explain.writer import GalleryImage
    from qpm.inference import load
    from qpm.inference.scan import render, scan_dataset
    from qpm.io import check_output_folder
    from qpm.metrics.run_folder import open_run
    from qpm.pipeline import run_folder as rf
    from qpm.pipeline.data import build_data
    from qpm.text import printable

    check_run_folder_arguments(args)
    run = open_run(args.run_dir, args.data_root)
    finished = [t for t in SPARSE_TYPES if t in run.models]
    mt = args.model_type or (finished[0] if finished else None)
    if mt is None or mt not in run.models:
        what = "no sparse model (qpm.pt, qsenn.pt or sldd.pt)" if mt is None else f"no {mt}.pt"
        raise QPMError(f"{run.path} holds {what} to explain.",
                       "Finish one first: qpm train [--model-type qsenn|sldd].")
    if args.max_figures < 0 or args.batch_size < 1 or args.gallery_size < 1:
        raise QPMError("--max-figures must be >= 0, --batch-size and --gallery-size positive.",
                       "Pass e.g. --max-figures 60 --batch-size 128 --gallery-size 6.")
    out_dir = Path(args.out) if args.out else run.path / "explain" / mt
    check_output_folder(out_dir, "--out")
    c = run.config
    rf.check_model_file(run.path, mt)
    model = load(run.path, mt, args.device)
    data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt)
    rf.check_data(run.path, rf.data_fingerprint(data, c.data_root), args.data_root)
    weight, sel = model.layer()
    names = model.class_names
    splits = {"train": data.train_eval, "test": data.test}
    print(f"scanning the {args.split} images ...", file=sys.stderr, flush=True)
    scans = {args.split: scan_dataset(model, splits[args.split], args.batch_size)}
    if "train" not in scans:
        print("scanning the train images for the gallery ...", file=sys.stderr, flush=True)
        scans["train"] = scan_dataset(model, splits["train"], args.batch_size)
    ex = scans[args.split]
    examples = {cls: (args.split, i) for cls, i in
                choose_examples(ex.labels, ex.logits, ex.quality).items()}
    train = scans["train"]
    used = [j for j in range(len(sel)) if weight[:, j].any()]
    top = top_activating(train.pooled[:, used], args.gallery_size)
    gallery = {int(sel[j]): [GalleryImage(("train", int(i)),
                                          names[train.labels[i]],
                                          {"split": "train", "index": int(i),
                                           "class": int(train.labels[i]),
                                           "activation": float(train.pooled[i, j])})
                             for i in row] for j, row in zip(used, top, strict=True)}
    wanted = {k for k in examples.values()} | {g.key for gs in gallery.values() for g in gs}
    images, maps = {}, {}
    for split in ("train", "test"):
        idx = sorted(i for s, i in wanted if s == split)
        for start in range(0, len(idx), args.batch_size):
            chunk = idx[start:start + args.batch_size]
            ims, ms = render(model, splits[split], chunk)
            images.update({(split, i): im for i, im in zip(chunk, ims, strict=True)})
            maps.update({(split, i): m for i, m in zip(chunk, ms, strict=True)})
    paths = write_explanations(
        out_dir, weight, sel, names, examples=examples, images=images, maps=maps,
        gallery=gallery, model_type=mt,
        title=f"{mt.upper()} on {c.dataset}: global explanation",
        max_figures=args.max_figures,
        extra={"run_dir": printable(run.path), "split": args.split,
               "accuracy": model.meta.get("accuracy")},
    )
    plot_name = rf.plot_file(mt)
    if not (run.path / plot_name).exists():
        plot_assignment(weight, sel, names, run.path / plot_name)
    counts = model.global_explanation().counts
    n_fig = len(list((out_dir / "figures").glob("*.png"))) if (out_dir / "figures").exists() else 0
    print(f"explanation of {mt}: {printable(paths['json'])}")
    print(f"{mt}: {counts.line()}")
    if counts.warning():
        print(counts.warning())
    print(f"page: {printable(paths['html'])} ({n_fig} comparison figures, "
          f"{len(gallery)} gallery rows)")
    return 0
