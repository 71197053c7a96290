"""``qpm explain RUN_DIR``: explanation.json, comparison figures and a static index.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from qpm.commands._common import add_run_folder_arguments
from qpm.pipeline.run_folder import holding_lock

SPARSE_TYPES = ("qpm", "qsenn", "sldd")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain",
        help="global explanation of a trained model: JSON, figures and an HTML page",
        description="Write explanation.json (every class with its features, the pairs of "
        "classes that share all but one feature and the features that distinguish them), "
        "class-comparison figures (an example image of each class with each feature's "
        "activation map) and a static index.html that opens in any browser without network.",
    )
    add_run_folder_arguments(p)
    p.add_argument("--model-type", choices=SPARSE_TYPES,
                   help="which model to explain (default: the first finished of qpm, qsenn, "
                   "sldd)")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="where the example images come from (default: test)")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/explain/TYPE)")
    p.add_argument("--max-figures", type=int, default=60,
                   help="comparison figures to draw at most (default 60)")
    return p


@holding_lock
def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from qpm.errors import QPMError
    from qpm.explain import choose_examples, displayable, plot_assignment, write_explanations
    from qpm.metrics.model_eval import collect_outputs, head_weights
    from qpm.metrics.run_folder import open_run
    from qpm.pipeline import distributed as dist
    from qpm.pipeline import run_folder as rf
    from qpm.pipeline.data import build_data, get_dataset

    run = open_run(args.run_dir, args.data_root)
    finished = [t for t in SPARSE_TYPES if t in run.models]
    mt = args.model_type or (finished[0] if finished else None)
    if mt is None or mt not in run.models:
        what = "no sparse model (qpm.pt, qsenn.pt or sldd.pt)" if mt is None else f"no {mt}.pt"
        raise QPMError(f"{run.path} holds {what} to explain.",
                       "Finish one first: qpm train [--model-type qsenn|sldd].")
    if args.max_figures < 0 or args.batch_size < 1:
        raise QPMError("--max-figures must be >= 0 and --batch-size positive.",
                       "Pass e.g. --max-figures 60 --batch-size 128.")
    c = run.config
    device = dist.get_context(args.device).device
    data = build_data(c.dataset, c.data_root, c.image_size, c.crop_gt)
    rf.check_data(run.path, rf.data_fingerprint(data, c.data_root), args.data_root)
    spec = get_dataset(c.dataset)
    dataset = data.train_eval if args.split == "train" else data.test
    rf.check_model_file(run.path, mt)
    model, meta = run.load(mt, device)
    weight, used = head_weights(model)
    sel = np.arange(weight.shape[1]) if used is None else used
    out = collect_outputs(model, dataset, device, args.batch_size, used, None, 5)
    examples = choose_examples(out["labels"], out["logits"])
    order = sorted(set(examples.values()))
    images, maps = {}, {}
    with torch.no_grad():
        batch = torch.stack([dataset[i][0] for i in order]).to(device)
        fmaps = model(batch).feature_maps[:, torch.as_tensor(sel, device=device)]
    for j, i in enumerate(order):
        images[i] = displayable(batch[j].cpu().numpy(), spec.mean, spec.std)
        maps[i] = fmaps[j].float().cpu().numpy()
    out_dir = Path(args.out) if args.out else run.path / "explain" / mt
    paths = write_explanations(
        out_dir, weight, sel, data.class_names, examples=examples, images=images, maps=maps,
        model_type=mt, title=f"{mt.upper()} on {c.dataset}: global explanation",
        max_figures=args.max_figures,
        extra={"run_dir": str(run.path), "split": args.split, "accuracy": meta.get("accuracy")},
    )
    plot_name = rf.plot_file(mt)
    if not (run.path / plot_name).exists():
        plot_assignment(weight, sel, data.class_names, run.path / plot_name)
    n_fig = len(list((out_dir / "figures").glob("*.png"))) if (out_dir / "figures").exists() else 0
    print(f"explanation of {mt}: {paths['json']}")
    print(f"page: {paths['html']} ({n_fig} comparison figures)")
    return 0
