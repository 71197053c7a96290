"""`python -m qpm` for tests/test_distributed_train.py, which also records what each rank holds.

A training stage ends by copying rank 0's weights to every rank (``broadcast_state``). This
script runs the command line as ``python -m qpm`` does, with that call wrapped to record, on
every rank, the parameters just before it (what DDP kept in step) and the whole state just
after it (what the rank goes on with). It writes them to ``$QPM_PROBE_DIR/rank<R>.pt``, one
entry per training stage, so the test compares ranks without hooks in the package.
"""

from __future__ import annotations

import os
import sys

import torch

from qpm.cli import main
from qpm.pipeline import distributed


def _copy(tensors) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu().clone() for name, t in tensors}


def _recording(real, stages: list[dict]):
    def broadcast_state(model: torch.nn.Module, src: int = 0) -> None:
        module = distributed.unwrap(model)
        params = _copy(module.named_parameters())
        real(model, src)
        stages.append({"params": params, "state": _copy(module.state_dict().items())})
    return broadcast_state


if __name__ == "__main__":
    stages: list[dict] = []
    distributed.broadcast_state = _recording(distributed.broadcast_state, stages)
    code = main(sys.argv[1:])
    torch.save(stages, os.path.join(os.environ["QPM_PROBE_DIR"], f"rank{os.environ['RANK']}.pt"))
    sys.exit(code)
