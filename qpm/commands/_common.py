"""Arguments shared by the commands that read a run folder (evaluate, explain, predict)."""

from __future__ import annotations

import argparse


def add_run_folder_arguments(p: argparse.ArgumentParser) -> None:
    """RUN_DIR plus where its data lives and how to run the model over it."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by qpm train")
    p.add_argument("--data-root", metavar="DIR", help="dataset folder, if it moved")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def add_variant_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", metavar="NAME",
                   help="which setting of the model type: its folder under RUN_DIR/variants/ "
                   "or a unique start of it, e.g. qpm-n30 (default: the most recently trained)")


def check_run_folder_arguments(args: argparse.Namespace) -> None:
    """One line for a bad --device or --batch-size, before anything is loaded."""
    from qpm.errors import QPMError
    from qpm.run_folder.config import check_device

    check_device(args.device)
    if args.batch_size < 1:
        raise QPMError(f"--batch-size must be positive, got {args.batch_size}.",
                       "Pass e.g. --batch-size 128.")
