"""FSDP2 on CPU (torch's `fully_shard` over gloo, two processes): our loss path, which applies the
LM head after the wrapped forward returns, gives the gradients of one process over the whole batch.

The Trainer itself can't be run under FSDP on CPU (accelerate turns FSDP into DDP for CPU
launches, docs/multi-gpu.md), so this runs the parts the Trainer runs on each process:
`trained_hidden` through the wrapped model, `gather_sharded_head`, the fused loss scaled as
`compute_loss` scales it, and backward with FSDP's reduce-scatter.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")

WORKER = """
import json, sys
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from tests.tiny import tiny_llama
from instructune.models.logprobs import causal_lm_parts, trained_hidden
from instructune.models.losses import chunked_token_losses
from instructune.training.trainer import gather_sharded_head

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
reference = tiny_llama(400, seed=0)
ids = torch.randint(4, 400, (4, 24), generator=torch.Generator().manual_seed(1))
labels = ids.clone()
labels[:, :5] = -100  # prompts
batch = {"input_ids": ids, "labels": labels}

def loss_sum(m, b):
    hidden, targets = trained_hidden(m, b)
    _, head = causal_lm_parts(m)
    sharded = isinstance(head.weight, DTensor)
    gather_sharded_head(m, head)
    return chunked_token_losses(head, hidden, targets, 7).sum(), sharded, targets.numel()

want, _, n_all = loss_sum(reference, batch)
(want / n_all).backward()

def wrap(m, variant):
    for layer in m.model.layers:
        fully_shard(layer, reshard_after_forward=True)
    if variant == "accelerate":
        # accelerate 1.15's fsdp2_prepare_model keeps [final norm, LM head] as one group that is
        # not resharded, and the root on torch's default (not resharded either). A list of
        # modules in one fully_shard call crashes (SIGSEGV) over gloo on CPU in torch 2.13, so
        # the head is its own unit here, with the same setting.
        fully_shard(m.lm_head, reshard_after_forward=False)
        fully_shard(m)
    else:  # every unit resharded after forward, the root too
        fully_shard(m, reshard_after_forward=True)
    return m

results = {}
for variant in ("accelerate", "explicit"):
    model = wrap(tiny_llama(400, seed=0), variant)
    mine = {k: v[rank::world] for k, v in batch.items()}
    got, sharded, _ = loss_sum(model, mine)
    # as compute_loss: the step's global target count, times the processes FSDP averages over
    (got / n_all * world).backward()
    errors = {}
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        grad = p.grad.full_tensor()
        errors[name] = float((grad - q.grad).abs().max() / q.grad.abs().max().clamp(min=1e-12))
    total = got.detach().clone()
    dist.all_reduce(total)
    results[variant] = {
        "sharded_after_forward": sharded,
        "errors": errors,
        "loss": float(total),
        "want": float(want),
    }
with open(f"{sys.argv[1]}-{rank}.json", "w") as f:
    json.dump(results, f)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun not installed")
def test_fsdp2_loss_path_matches_one_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    root = Path(__file__).resolve().parents[2]  # the worker imports `tests.tiny` and the package
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(
            [str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")]
        ),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", f"--master_port={_free_port()}"]
    done = subprocess.run(
        [*cmd, str(script), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        results = json.loads((tmp_path / f"out-{rank}.json").read_text())
        # accelerate's wrapping keeps the head gathered; a root resharded after forward doesn't,
        # and gather_sharded_head gathers it again
        assert results["accelerate"]["sharded_after_forward"] is False
        assert results["explicit"]["sharded_after_forward"] is True
        for variant, out in results.items():
            assert out["loss"] == pytest.approx(out["want"], rel=1e-5), variant
            assert len(out["errors"]) > 10
            worst = max(out["errors"], key=out["errors"].get)
            assert out["errors"][worst] < 1e-4, (variant, worst)
