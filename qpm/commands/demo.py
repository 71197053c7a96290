"""``qpm demo RUN_DIR``: a local Gradio app: upload an image, see its class, its features,
CHiQPM's tree of class paths and its conformal prediction set under a coverage slider."""

from __future__ import annotations

import argparse

from qpm.commands._common import add_variant_argument, choose_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="a local web app: upload an image, move the coverage slider (needs qpm[demo])",
        description="Serve a Gradio app on this machine for one trained model: upload an "
        "image to see its class, where its features are active and CHiQPM's tree of class "
        "paths; a slider sets the coverage of the conformal prediction set (from qpm "
        "calibrate), marked in the tree. Nothing is loaded from or sent to the internet: "
        "Gradio's analytics are off and no share link is made. Needs pip install 'qpm[demo]'.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by qpm train")
    p.add_argument("--model-type", metavar="NAME",
                   help="which model (default: the type of --variant, else the most "
                   "recently trained sparse model)")
    add_variant_argument(p)
    p.add_argument("--method", choices=("hierarchical", "thr", "aps"),
                   help="conformal method (default: hierarchical where the model allows it)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p


def run(args: argparse.Namespace) -> int:
    from qpm import run_folder as rf
    from qpm.demo.app import build_app, gradio
    from qpm.errors import QPMError
    from qpm.inference import load

    gradio()  # one line now, before the model loads, when Gradio is missing
    if not 0 < args.port < 65536:
        raise QPMError(f"--port must lie in 1..65535, got {args.port}.", "Pass e.g. 7860.")
    run = rf.open_run(args.run_dir)
    found = choose_model(run, args.model_type, args.variant)
    model = load(run.path, found.model_type, args.device, variant=found.variant)
    app, _ = build_app(model, args.method,
                       f"{found.label} on {run.config.dataset}")
    print(f"qpm demo of {found.label}: http://{args.host}:{args.port} (Ctrl-C ends it)",
          flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
               show_error=True, quiet=True)
    return 0
