"""The exact loss of a model on a split: every token scored once, framework-free (numpy only).

``estimate_loss()`` averages a few random batches: right for watching training, too noisy to
compare two runs. The exact loss scores every token of a split exactly once, each with as much
context as ``block_size`` allows, by sliding a window of ``block_size`` tokens with a stride:

* a split of N tokens has N - 1 targets (token i + 1 is predicted from tokens up to i);
* the first window reads tokens ``0 .. T-1`` and scores all its T targets (with 1 .. T tokens of
  context, as training does);
* each later window moves ``stride`` tokens on and scores only the targets no earlier window
  scored (its last ``stride``, fewer at the end of the split), each with at least
  ``T - stride + 1`` tokens of context; the last window ends exactly at the end of the split.

``stride = 1`` gives every target but the first T - 1 a full window (T forward passes per
token); ``stride = T`` is disjoint windows (most targets see little context). The default,
``T // 2``, costs two forward passes per token. The mean is taken in float64 over per-token
negative log-likelihoods computed in float64 from the model's logits, so backends that agree
on the logits agree on the loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

from common.errors import UserError

SPLITS = ("val", "train", "both")


@dataclass(frozen=True)
class WindowPlan:
    """Windows over a split: window k reads ``tokens[starts[k] : starts[k] + length]``, predicts
    ``tokens[starts[k] + 1 : starts[k] + length + 1]`` and scores its last ``scored[k]`` targets."""

    starts: np.ndarray  # (W,) int64
    scored: np.ndarray  # (W,) int64, summing to n_targets
    length: int  # every window's length: block_size, or the whole split when it is shorter
    stride: int

    @property
    def n_targets(self) -> int:
        return int(self.scored.sum())

    def __len__(self) -> int:
        return len(self.starts)


def default_stride(block_size: int) -> int:
    return max(1, block_size // 2)


def check_stride(stride: int | None, block_size: int) -> None:
    """A stride (None: the default) is 1..block_size: ``microgpt eval`` checks it as soon as the
    checkpoint gives the block size, and ``plan_windows`` again."""
    if stride is not None and not 1 <= stride <= block_size:
        raise UserError(f"--stride must be in 1..block_size={block_size}, got {stride}")


def plan_windows(n_tokens: int, block_size: int, stride: int | None = None) -> WindowPlan:
    """The windows that score each of the ``n_tokens - 1`` targets of a split exactly once."""
    check_stride(stride, block_size)
    stride = default_stride(block_size) if stride is None else stride
    n_targets = n_tokens - 1
    if n_targets < 1:
        raise UserError(f"a split of {n_tokens} token(s) has nothing to predict; use a longer text")
    length = min(block_size, n_targets)
    ends = list(range(length, n_targets, stride)) + [n_targets]  # exclusive end of each window's targets
    ends = np.asarray(ends, dtype=np.int64)
    starts = ends - length
    scored = np.diff(np.concatenate([[0], ends]))
    return WindowPlan(starts=starts, scored=scored, length=length, stride=stride)


def batches(tokens: np.ndarray, plan: WindowPlan, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(x, y, mask)`` batches of exactly ``batch_size`` windows, each ``(batch_size, length)``: the
    last batch is padded with copies of the first window, masked out, so every batch has one
    shape (a compiled forward is compiled once)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    tokens = np.asarray(tokens)
    L = plan.length
    offsets = np.arange(L + 1)
    positions = np.arange(L)
    for b0 in range(0, len(plan), batch_size):
        starts = plan.starts[b0:b0 + batch_size]
        scored = plan.scored[b0:b0 + batch_size]
        pad = batch_size - len(starts)
        idx = np.concatenate([starts, np.full(pad, plan.starts[0])])[:, None] + offsets  # (B, L + 1)
        window = tokens[idx].astype(np.int32)
        n = np.concatenate([scored, np.zeros(pad, dtype=np.int64)])
        mask = positions[None, :] >= (L - n)[:, None]  # the last n positions of each window
        yield np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:]), mask


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position negative log-likelihood ``logsumexp(logits) - logits[target]``, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
    return lse - np.take_along_axis(z, np.asarray(targets)[..., None].astype(np.int64), axis=-1)[..., 0]


@dataclass(frozen=True)
class ExactLoss:
    loss: float  # mean negative log-likelihood, nats per token
    bits_per_char: float  # loss / ln 2: a character-level model's tokens are characters
    perplexity: float
    tokens: int
    windows: int
    block_size: int
    stride: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"loss {self.loss:.6f} nats/token, {self.bits_per_char:.6f} bits/char, perplexity "
                f"{self.perplexity:.4f}, over {self.tokens:,} tokens ({self.windows:,} windows of "
                f"{self.block_size}, stride {self.stride})")


def summarize(nll_sum: float, tokens: int, plan: WindowPlan, block_size: int) -> ExactLoss:
    loss = nll_sum / tokens
    return ExactLoss(loss=loss, bits_per_char=loss / math.log(2), perplexity=math.exp(loss), tokens=tokens,
                     windows=len(plan), block_size=block_size, stride=plan.stride)
