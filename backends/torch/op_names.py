"""What torch's profiler names, by category (``benchmarks/attribution.py``'s categories): aten ops,
Inductor's generated kernels and torch.distributed's collectives. Read by ``bench.op_classifier``;
JAX's counterpart reads the compiled HLO instead (``backends/jax/hlo.py``). Imports nothing of torch."""

from __future__ import annotations

import re

MATMULS = {"aten::mm", "aten::addmm", "aten::matmul", "aten::linear", "aten::bmm", "aten::baddbmm"}
BY_NAME = [  # (category, aten op names) for everything that is not a matmul
    ("attention", {"aten::_scaled_dot_product_flash_attention_for_cpu",
                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::scaled_dot_product_attention",
                   "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention",
                   "aten::_scaled_dot_product_efficient_attention_backward",
                   "aten::_scaled_dot_product_flash_attention_backward", "aten::_softmax",
                   "aten::_softmax_backward_data", "aten::softmax", "aten::masked_fill", "aten::masked_fill_"}),
    ("loss", {"aten::cross_entropy_loss", "aten::log_softmax", "aten::_log_softmax", "aten::_log_softmax_backward_data",
              "aten::nll_loss", "aten::nll_loss_nd", "aten::nll_loss_forward", "aten::nll_loss_backward"}),
    ("layernorm", {"aten::layer_norm", "aten::native_layer_norm", "aten::native_layer_norm_backward"}),
    ("optimizer", {"aten::_fused_adamw_", "aten::_fused_adam_", "aten::linalg_vector_norm", "aten::_foreach_norm",
                   "aten::_foreach_mul_", "aten::clamp", "aten::reciprocal", "aten::stack"}),
    ("elementwise", {"aten::gelu", "aten::gelu_backward", "aten::add", "aten::add_", "aten::mul", "aten::mul_",
                     "aten::div", "aten::div_", "aten::sub", "aten::neg", "aten::where", "aten::dropout",
                     "aten::native_dropout", "aten::native_dropout_backward", "aten::bernoulli_", "aten::rsub",
                     "aten::sum", "aten::mean", "aten::pow", "aten::sqrt", "aten::exp", "aten::tanh"}),
    ("copies/layout", {"aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::transpose", "aten::t",
                       "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::as_strided", "aten::permute",
                       "aten::expand", "aten::_unsafe_view", "aten::split", "aten::split_with_sizes", "aten::select",
                       "aten::slice", "aten::narrow", "aten::unsqueeze", "aten::squeeze", "aten::detach",
                       "aten::embedding", "aten::embedding_backward", "aten::embedding_dense_backward",
                       "aten::index_select", "aten::index_add_", "aten::empty", "aten::empty_like", "aten::empty_strided",
                       "aten::zeros", "aten::zeros_like", "aten::zero_", "aten::fill_", "aten::arange", "aten::to",
                       "aten::_to_copy", "aten::lift_fresh", "aten::alias", "aten::resolve_conj", "aten::resolve_neg",
                       "aten::new_empty_strided", "aten::ones_like", "aten::scalar_tensor", "aten::item",
                       "aten::_local_scalar_dense", "aten::result_type", "aten::set_", "aten::unbind"}),
]
CATEGORY = {name: category for category, names in BY_NAME for name in names}
# torch.distributed's collectives (DDP's bucketed all-reduce, FSDP2's all-gather and reduce-scatter), by
# the names the profiler gives them: c10d ops, the backend's own events (gloo:/nccl:) and record_param_comms
COLLECTIVE_PREFIXES = ("c10d::", "_c10d_functional::", "c10d_functional::", "gloo:", "nccl:", "record_param_comms")
COLLECTIVE_WORDS = ("all_reduce", "allreduce", "all_gather", "allgather", "reduce_scatter", "all_to_all")


# Inductor's generated kernels are named after the ops they fuse (graph_0_cpp_fused_native_layer_norm_0
# on a CPU, triton_per_fused_native_layer_norm_0 on a GPU): the first rule that matches a part of
# the name wins, so a fusion holding a LayerNorm and the residual add around it is "layernorm"
FUSED_KERNEL = re.compile(r"(cpp|triton_[a-z]+)_fused_")
FUSED_BY_PART = [
    ("loss", ("nll_loss", "log_softmax")),
    ("attention", ("softmax", "scaled_dot_product", "masked_fill")),
    ("layernorm", ("layer_norm",)),
    ("optimizer", ("adam", "foreach", "linalg_vector_norm", "clamp", "reciprocal")),
    ("copies/layout", ("embedding", "clone", "cat", "copy", "index", "scatter", "gather", "transpose", "permute")),
]


def fused_kernel_category(name: str) -> str | None:
    """The category of one of Inductor's generated kernels, by the ops its name lists (a pointwise
    or reduction fusion none of whose parts a rule knows is "elementwise"), or None for another name."""
    match = FUSED_KERNEL.search(name)
    if match is None:
        return None
    parts = name[match.end():]
    return next((category for category, words in FUSED_BY_PART if any(w in parts for w in words)), "elementwise")


def is_collective(name: str) -> bool:
    return name.startswith(COLLECTIVE_PREFIXES) or any(w in name.lower() for w in COLLECTIVE_WORDS)
