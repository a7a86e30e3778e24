"""`train.kernels`: the selection (CPU always native, Liger only where installed, clear errors),
the summed loss hook, and the varlen attention path for packed rows, which must give the same
per-example losses and gradients as examples run alone (run here through its CPU reference; the
CUDA kernel call is the same function with torch's flash varlen op)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instructune.config import ConfigError, load_config
from instructune.data.collate import PackedCollator, PaddedCollator
from instructune.data.packing import pack
from instructune.models.logprobs import (
    TrainedTargets,
    causal_lm_parts,
    per_example_losses,
    trained_hidden,
)
from instructune.models.losses import chunked_token_losses
from instructune.training.kernels import (
    KernelPlan,
    apply_kernels,
    select_kernels,
    summed_token_loss,
)
from instructune.training.run import run_train
from instructune.training.varlen import VARLEN, segment_bounds, varlen_kwargs


class _Example:
    def __init__(self, ids: list[int]) -> None:
        self.input_ids = np.array(ids, dtype=np.int64)
        self.labels = np.array([-100, *ids[1:]], dtype=np.int64)  # first label never trained


def _examples(vocab: int) -> list[_Example]:
    g = torch.Generator().manual_seed(0)
    lengths = (10, 21, 7, 30, 15, 5, 12)
    return [_Example(torch.randint(4, vocab, (n,), generator=g).tolist()) for n in lengths]


def _alone(model: Any, ex: _Example) -> torch.Tensor:
    """One example through the model's own forward and logits: summed next-token CE."""
    ids = torch.as_tensor(ex.input_ids)[None]
    logits = model(input_ids=ids, use_cache=False).logits.float()
    return F.cross_entropy(logits[0, :-1], torch.as_tensor(ex.labels)[1:], reduction="sum")


def _packed(model: Any, batch: dict[str, torch.Tensor], packed: list[Any]) -> dict[int, Any]:
    _, head = causal_lm_parts(model)
    hidden, targets = trained_hidden(model, batch)
    segs = per_example_losses(batch, chunked_token_losses(head, hidden, targets, chunk_size=7))
    return {
        idx: segs[row, seg]
        for row, p in enumerate(packed)
        for seg, idx in enumerate(p.indices.tolist())
    }


def _varlen(model: Any) -> Any:
    plan = apply_kernels(model, KernelPlan("auto", "cuda", attention=VARLEN))
    assert model.config._attn_implementation == VARLEN and plan.attention == VARLEN
    return model


@pytest.mark.parametrize(
    ("setting", "device", "liger", "want"),
    [
        ("auto", "cpu", True, ("chunked", "native", None)),  # CPU: always ours
        ("auto", "cuda", False, ("chunked", "native", VARLEN)),
        ("auto", "cuda", True, ("liger", "liger", VARLEN)),
        ("liger", "cuda", True, ("liger", "liger", VARLEN)),
        ("native", "cuda", True, ("chunked", "native", None)),
    ],
)
def test_selection(setting: str, device: str, liger: bool, want: tuple[Any, ...]) -> None:
    plan = select_kernels(setting, device, packed=True, liger=liger)
    assert (plan.loss, plan.layers, plan.attention) == want
    assert plan.describe()["setting"] == setting


def test_varlen_only_for_packed_rows_and_the_default_attention() -> None:
    assert select_kernels("auto", "cuda", packed=False, liger=False).attention is None
    chosen = select_kernels("auto", "cuda", True, attn_implementation="eager", liger=False)
    assert chosen.attention is None  # an explicit model.attn_implementation is kept


def test_liger_requested_but_missing_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"train\.kernels: liger.*instructune\[gpu\]"):
        select_kernels("liger", "cuda", packed=True, liger=False)


def test_liger_requested_on_cpu_says_it_needs_a_gpu() -> None:
    with pytest.raises(ConfigError, match=r"train\.kernels: liger needs a CUDA GPU.*on cpu"):
        select_kernels("liger", "cpu", packed=True, liger=True)


def test_config_key_is_validated() -> None:
    assert load_config(None, ["train.kernels=native"]).train.kernels == "native"
    with pytest.raises(ConfigError, match=r"train\.kernels") as err:
        load_config(None, ["train.kernels=fast"])
    assert "liger" in str(err.value) and "fast" in str(err.value)


def test_summed_loss_without_gradient_is_the_chunked_loss(tiny_model: Any) -> None:
    """Even under a Liger plan, evaluation (no gradient) runs our chunked loss: eval losses are
    computed the same way whichever kernels trained (and Liger is not needed to run it)."""
    _, head = causal_lm_parts(tiny_model)
    hidden = torch.randn(13, head.in_features)
    targets = torch.randint(0, head.out_features, (13,))
    want = chunked_token_losses(head, hidden, targets, 5).sum()
    trained = TrainedTargets(hidden, targets, head, None)
    for plan in (None, KernelPlan("auto", "cuda", loss="liger", layers="liger")):
        with torch.no_grad():
            got = summed_token_loss(plan, trained, 5)
        assert got.shape == () and torch.equal(got, want)


def test_segment_bounds_split_rows_restarts_and_padding() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    cu, longest = segment_bounds(positions)
    assert cu.tolist() == [0, 3, 5, 6, 12] and longest == 6 and cu.dtype == torch.int32
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    cu, longest = segment_bounds(positions, mask)
    assert cu.tolist() == [0, 3, 5, 6, 10, 12] and longest == 4


def test_varlen_packed_losses_equal_examples_alone(tiny_tok: Any, tiny_model: Any) -> None:
    tiny_model.eval()
    examples = _examples(len(tiny_tok))
    packed = pack(examples, max_length=40)
    assert len(packed) >= 2 and any(len(p.lengths) >= 3 for p in packed)  # rows pack and pad
    batch = PackedCollator(tiny_tok.pad_token_id)(packed)
    with torch.no_grad():
        want = {i: float(_alone(tiny_model, ex)) for i, ex in enumerate(examples)}
        got = {i: float(v) for i, v in _packed(_varlen(tiny_model), batch, packed).items()}
    assert got.keys() == want.keys()
    for i in want:
        assert got[i] == pytest.approx(want[i], rel=1e-5, abs=1e-5), i


def _token_losses(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    _, head = causal_lm_parts(model)
    hidden, targets = trained_hidden(model, batch)
    return chunked_token_losses(head, hidden, targets, chunk_size=7)


def test_varlen_gradients_equal_the_sdpa_packed_path(tiny_tok: Any, tiny_model: Any) -> None:
    examples = _examples(len(tiny_tok))
    packed = pack(examples, max_length=40)
    batch = PackedCollator(tiny_tok.pad_token_id)(packed)

    def grads() -> dict[str, torch.Tensor]:
        tiny_model.zero_grad()
        _token_losses(tiny_model, batch).sum().backward()
        return {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}

    want = grads()  # sdpa with transformers' block-causal mask
    _varlen(tiny_model)
    got = grads()
    assert got.keys() == want.keys() and len(got) > 10
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_varlen_padded_batch_matches_examples_alone(tiny_tok: Any, tiny_model: Any) -> None:
    tiny_model.eval()
    examples = _examples(len(tiny_tok))
    batch = PaddedCollator(tiny_tok.pad_token_id)(examples)
    with torch.no_grad():
        want = torch.stack([_alone(tiny_model, ex) for ex in examples])
        got = per_example_losses(batch, _token_losses(_varlen(tiny_model), batch))[:, 0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_run_records_the_kernel_plan(make_config: Any) -> None:
    cfg = make_config(train={"max_steps": 1})
    result = run_train(cfg)
    manifest = json.loads((Path(cfg.output_path) / "manifest.json").read_text())
    want = {"setting": "auto", "device": "cpu", "loss": "chunked", "layers": "native"}
    assert manifest["kernels"] == want | {"attention": None}
    assert result.metrics["kernels"] == manifest["kernels"]


def test_varlen_keywords_follow_the_installed_torch() -> None:
    """torch 2.13's varlen_attn (window_size, enable_gqa, scale) and the older one (is_causal
    only; the GPU machines have torch 2.11), read from the real signature where it exists."""
    import inspect

    from torch.nn.attention.varlen import varlen_attn

    here = set(inspect.signature(varlen_attn).parameters)
    assert varlen_kwargs(here, 32, 8, 64, 0.125) == (
        {"window_size": (-1, 0), "enable_gqa": True, "scale": 0.125},
        1,
    )
    older = {"query", "key", "value", "cu_seq_q", "cu_seq_k", "max_q", "max_k", "is_causal"}
    assert varlen_kwargs(older, 32, 8, 64, 0.125) == ({"is_causal": True}, 4)
    with pytest.raises(ValueError, match="no `scale`"):
        varlen_kwargs(older, 32, 8, 64, 0.5)


def test_run_with_liger_on_cpu_stops_with_the_config_error(make_config: Any) -> None:
    cfg = make_config(train={"max_steps": 1, "kernels": "liger"})
    with pytest.raises(ConfigError, match=r"train\.kernels: liger needs a CUDA GPU"):
        run_train(cfg)
    assert not (Path(cfg.output_path) / "metrics.jsonl").exists()  # nothing trained
