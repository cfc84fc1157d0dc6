"""The parity suite's tolerances: one table, each bound with its reason. Framework-free.

This module is the one source of truth; ``backends/parity/README.md`` shows the table as
``python -m backends.parity.tolerances`` renders it (a test keeps the two identical).
"""

from __future__ import annotations

from dataclasses import dataclass

PARITY_DTYPES = ("float64", "float32")
GREEDY_GAP = 1e-3  # greedy tokens are compared where the top-2 logit gap exceeds this
INIT_SIGMAS = 5.0  # native init: the sample std may miss the target by 5 standard errors
LN_STRESS_MEAN = {"float64": 1e4, "float32": 3.0}  # LayerNorm inputs with a large mean
SAMPLING_MARGIN = {"float64": 1e-9, "float32": 1e-4}  # a uniform this close to a CDF step is a near-tie


@dataclass(frozen=True)
class Tol:
    """A tensor passes when ``max|a - b| <= atol + rtol * max|b|`` (b: the reference)."""

    atol: float
    rtol: float
    reason: str

    def bound(self, scale: float) -> float:
        return self.atol + self.rtol * scale

    def text(self) -> str:
        if self.rtol == 0:
            return f"abs {self.atol:.0e}"
        if self.atol == 0:
            return f"rel {self.rtol:.0e}"
        return f"abs {self.atol:.0e} + rel {self.rtol:.0e}"


EXACT = Tol(0.0, 0.0, "an integer count: exactly equal")

_F64_ROUNDOFF = ("float64 round-off (eps 2.2e-16) through a few hundred dependent operations, "
                 "summed in a different order by each framework")
TOLERANCES: dict[str, dict[str, Tol]] = {
    "float64": {
        "logits": Tol(1e-10, 0.0, _F64_ROUNDOFF + "; logits are O(1)"),
        "loss": Tol(1e-10, 0.0, _F64_ROUNDOFF + "; the loss is O(1)"),
        "grads": Tol(1e-12, 1e-8, "gradients range over orders of magnitude: 1e-8 of each tensor's largest "
                                  "entry, plus 1e-12 for tensors whose gradient is ~0"),
        "adam_params": Tol(1e-12, 0.0, "one step moves a weight by <= lr; its round-off is that of the "
                                       "O(1) weights (1e-16), far below 1e-12"),
        "adam_moments": Tol(1e-12, 1e-8, "the moments are (1-beta1)g and (1-beta2)g^2: the gradients' own "
                                         "tolerance"),
        "loss_curve": Tol(1e-9, 0.0, "round-off compounds over 50 steps of Adam, which divides by "
                                     "sqrt(v): small gradient differences become larger update differences"),
        "final_params": Tol(1e-9, 0.0, "as the loss curve: 50 compounding steps"),
        "lr": Tol(0.0, 1e-12, "both schedules are the same closed form in Python floats"),
        "lr_applied": Tol(0.0, 1e-8, "lr = update / (m_hat / (sqrt(v_hat) + eps)), each side from its own "
                                     "update: float64 round-off of a difference of O(1e-3) weights"),
        "estimate_loss": Tol(1e-10, 0.0, "a mean of losses, each within 1e-10"),
        "crossload": Tol(1e-10, 0.0, "the checkpoint stores float64 exactly: the logits' own tolerance"),
        "submodule": Tol(1e-10, 0.0, "one layer's round-off, inputs O(1) (LayerNorm also gets inputs "
                                     "with mean 1e4, which exposes a one-pass E[x^2]-E[x]^2 variance)"),
    },
    "float32": {
        "logits": Tol(1e-5, 0.0, "float32 round-off (eps 1.2e-7) over the network's depth and width; "
                                 "logits are O(1)"),
        "loss": Tol(1e-5, 0.0, "float32 round-off; the loss is O(1)"),
        "grads": Tol(1e-9, 1e-5, "1e-5 of each tensor's largest gradient: backward sums in different "
                                 "orders; 1e-9 for gradients that are ~0"),
        "adam_params": Tol(1e-5, 0.0, "AdamW's step is lr*m_hat/(sqrt(v_hat)+eps), about lr*g/(|g|+eps) at first: "
                                      "for the few gradients within ~100 eps of zero, their float32 round-off "
                                      "(~1e-9) moves the update by up to a few % of lr (3e-4 here)"),
        "adam_moments": Tol(1e-12, 2e-5, "the moments are (1-beta1)g and (1-beta2)g^2: twice the "
                                         "gradients' relative tolerance"),
        "loss_curve": Tol(1e-4, 0.0, "float32 round-off compounding over 50 Adam steps"),
        "final_params": Tol(1e-4, 0.0, "float32 round-off compounding over 50 Adam steps"),
        "lr": Tol(0.0, 1e-12, "both schedules are the same closed form in Python floats"),
        "lr_applied": Tol(0.0, 1e-3, "lr = update / (m_hat / (sqrt(v_hat) + eps)), each side from its own "
                                     "update: float32 round-off of a weight difference ~1e-4 of the weight"),
        "estimate_loss": Tol(1e-5, 0.0, "a mean of losses, each within 1e-5"),
        "crossload": Tol(1e-5, 0.0, "the checkpoint stores float32 exactly: the logits' own tolerance"),
        "submodule": Tol(1e-5, 0.0, "one layer's float32 round-off, inputs O(1) (LayerNorm also gets "
                                    "inputs with mean 3: centring costs mean * 1.2e-7 per element)"),
    },
}

# -- against float64 (backends/parity/reference.py): each backend's error at a low dtype --------
REFERENCE_DTYPES = ("bfloat16", "float32")
ERROR_RATIO = 3.0  # the two backends' errors must be within this factor of each other
RATIO_FLOOR = {"bfloat16": 1e-5, "float32": 1e-7}  # errors below this count as this, for the ratio
# per tensor (the gradients' ratio), the floor is the dtype's unit round-off: one tensor computed
# more exactly by one backend (the JAX head in float32, torch's under autocast in bfloat16) is no fault
TENSOR_RATIO_FLOOR = {"bfloat16": 2.0 ** -9, "float32": 2.0 ** -24}


@dataclass(frozen=True)
class Budget:
    """A backend's normwise error ``‖a - r‖ / ‖r‖`` against float64 may be at most ``rel``."""

    rel: float
    reason: str


REFERENCE_BUDGETS: dict[str, dict[str, Budget]] = {
    "bfloat16": {
        "logits": Budget(1e-2, "bfloat16 keeps 8 bits (unit round-off 2^-9 = 2e-3); a few roundings "
                               "through the layers"),
        "attention": Budget(1e-2, "each block's softmax output, float32 in both backends, from bfloat16 scores: "
                                  "their round-off moves it (4e-5 at tiny, 1e-3 at shakespeare-char, at init)"),
        "attention_row_sums": Budget(1e-5, "the softmax returns float32 at any dtype, so its rows sum to 1 within "
                                           "float32 round-off (5e-8 measured); rounded to bfloat16 they miss by "
                                           "2e-4 (T=256) to 2e-3 (T=16)"),
        "loss": Budget(5e-4, "the loss is taken in float32 from the logits: their errors average out; a "
                             "loss rounded to bfloat16 (4e-3 at 4.2) is over it"),
        "grads": Budget(3e-2, "per tensor: bfloat16 round-off of the matmuls, forward and backward"),
        "update": Budget(1.0, "AdamW's first update is about lr * sign(g): every gradient smaller than its "
                              "own bfloat16 error may flip (at most 2 * lr, twice the true update)"),
        "loss_curve": Budget(1e-3, "each step's loss, relative; the runs drift apart by round-off"),
    },
    "float32": {
        "logits": Budget(1e-5, "float32 unit round-off 6e-8 through the layers"),
        "attention": Budget(1e-5, "float32 round-off of the scores, through the layers"),
        "attention_row_sums": Budget(1e-5, "float32 round-off of the softmax"),
        "loss": Budget(1e-5, "float32 round-off of the loss"),
        "grads": Budget(1e-4, "per tensor: float32 round-off, forward and backward"),
        "update": Budget(1e-2, "AdamW's first update is about lr * sign(g): a gradient within its float32 "
                              "error of zero may flip (at most 2 * lr)"),
        "loss_curve": Budget(1e-5, "each step's loss, relative, over the run"),
    },
}

# the rows each tolerance applies to, for the rendered table
APPLIES_TO = {
    "logits": "`logits`", "loss": "`loss`", "grads": "`grads`",
    "adam_params": "`adam step: params (…)`, `cross-load …: resumed step`",
    "adam_moments": "`adam step: exp_avg`, `adam step: exp_avg_sq`",
    "loss_curve": "`50-step loss curve`", "final_params": "`50-step final params`",
    "lr": "`lr schedule (get_lr)`", "lr_applied": "`lr applied in the 50-step run`",
    "estimate_loss": "`estimate_loss`", "crossload": "`cross-load …: logits`", "submodule": "`sub: …`",
}


def markdown_table() -> str:
    """The tolerance table as Markdown, as ``backends/parity/README.md`` shows it."""
    lines = ["| tolerance | rows | float64 | float32 | why |", "|---|---|---|---|---|"]
    for key, f64 in TOLERANCES["float64"].items():
        f32 = TOLERANCES["float32"][key]
        why = f"float64: {f64.reason}. float32: {f32.reason}." if f64.reason != f32.reason else f64.reason + "."
        lines.append(f"| `{key}` | {APPLIES_TO[key]} | {f64.text()} | {f32.text()} | {why} |")
    return "\n".join(lines) + "\n" + "\n" + reference_table()


REFERENCE_ROWS = {"logits": "`logits: …`", "attention": "`attention weights: …`", "attention_row_sums": "`attention row sums: …`", "loss": "`loss: …`", "grads": "`grads: …`",
                  "update": "`adam update: …`", "loss_curve": "`N-step loss curve: …`"}


def reference_table() -> str:
    """The budgets of ``--against float64`` (bfloat16, float32) as Markdown."""
    lines = [f"Against float64 (`--dtype bfloat16`, `--dtype float32 --against float64`): each backend's "
             f"normwise error `‖a − r‖ / ‖r‖` within its budget, and the two backends' errors within "
             f"{ERROR_RATIO:g}× of each other (each first raised to the floor: bfloat16 "
             f"{RATIO_FLOOR['bfloat16']:.0e}, float32 {RATIO_FLOOR['float32']:.0e}; for the gradients, compared "
             f"tensor by tensor, the unit round-off: {TENSOR_RATIO_FLOOR['bfloat16']:.1e}, "
             f"{TENSOR_RATIO_FLOOR['float32']:.1e}).", "",
             "| budget | rows | bfloat16 | float32 | why |", "|---|---|---|---|---|"]
    for key, bf in REFERENCE_BUDGETS["bfloat16"].items():
        f32 = REFERENCE_BUDGETS["float32"][key]
        lines.append(f"| `{key}` | {REFERENCE_ROWS[key]} | rel {bf.rel:.0e} | rel {f32.rel:.0e} | "
                     f"bfloat16: {bf.reason}. float32: {f32.reason}. |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
