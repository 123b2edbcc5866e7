"""`BlockPruningConfig`: the settings of knowledge-guided block-structured pruning (the penalty, the threshold, when
to apply it), validated at construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..configuration_binary_bert import ENCODER_MODULES

DIRECTIONS = ("row", "column", "both")
PENALTY_FORMS = ("auto", "weight", "gate")


def _fail(name: str, message: str) -> None:
    raise ValueError(f"BlockPruningConfig.{name} {message}")


@dataclass
class BlockPruningConfig:
    r"""Block-structured pruning with a group-lasso penalty (Li et al., "Efficient Transformer-based Large Scale
    Language Representations using Hardware-friendly Block Structured Pruning", Findings of EMNLP 2020; the
    knowledge-guided variant distils from a teacher meanwhile). Formulas in `hf_binary_bert.pruning.penalty` and
    docs/pruning.md.

    Every weight matrix θ_i [out, in] of the modules in `modules` is divided into K = `num_blocks` blocks, and the
    training loss gets

        λ₁ Σ_i Σ_j Σ_p ‖[θ_ij]_{p,:}‖₂   (row groups; `direction="row"`: blocks split the input axis)
        λ₁ Σ_i Σ_j Σ_q ‖[θ_ij]_{:,q}‖₂   (column groups; `direction="column"`: blocks split the output axis)
      + λ₂ Σ_i Σ_j θ_ij (1 − θ_ij)      (`penalty_form="weight"`, the seed's form, on every weight) or
      + λ₂ Σ_g g (1 − g)                 (`penalty_form="gate"`, on one gate g ∈ [0, 1] per group, see `gates.py`).

    After training (and every `threshold_every` steps), every group whose L2 norm is ≤ ε is set to zero; with
    `remove=True` the structures that are then entirely zero (FFN neurons, attention heads) are physically removed
    (`hf_binary_bert.pruning.structure.prune_`).

    Args:
        group_lasso_weight (λ₁, `float`, defaults to 1e-4): weight of the group-lasso term, ≥ 0.
        binarizing_weight (λ₂, `float`, defaults to 0.0): weight of the θ(1 − θ) term, ≥ 0.
        num_blocks (K, `int`, defaults to 1): blocks per matrix; must divide the split axis of every pruned matrix
            (checked by `check_model`).
        direction (`str`, defaults to `"row"`): `"row"`, `"column"` or `"both"` (both sums).
        modules (`list[str]`, defaults to the six encoder Linears): any of `query`, `key`, `value`,
            `attention_output`, `intermediate`, `output`.
        epsilon (ε, `float`, defaults to 1e-2): groups with L2 norm ≤ ε are zeroed by the threshold, ≥ 0.
        penalty_form (`str`, defaults to `"auto"`): where θ(1 − θ) applies: `"weight"` (the seed's form) or
            `"gate"`. `"auto"` becomes `"gate"` when the term is on (λ₂ > 0) without `proximal`, else `"weight"` (no
            gates: the plain group lasso on the weights): at goal 1's budget the gated form did at least as well as
            the seed's on every measured count and the seed's worked against the group lasso (docs/pruning.md, "The
            two forms at the recipe's budget").
        threshold_every (`int`, defaults to 0): also threshold (zero, not remove) every this many optimizer
            steps during training; 0: only at the end.
        remove (`bool`, defaults to `True`): at the end of training, remove the zero structures physically.
        ffn_keep_share (`float`, optional): a target width. Wherever the threshold applies, every layer also keeps
            only its k = round(share · `intermediate_size`) FFN neurons of largest score ‖W_I[p,:]‖₂ · ‖W_O[:,p]‖₂
            (intermediate row times output column; the others get a zero intermediate row, so their constant
            act(b_p) is folded into the output bias on removal). In (0, 1]; None: ε alone decides.
        heads_keep_share (`float`, optional): the same for attention heads: k = round(share ·
            `num_attention_heads`) heads of largest ‖W_V[h]‖_F · ‖W_AO[:,h]‖_F (value rows times attention-output
            columns of head h) per layer; the others get zero value rows (b_V folded). In (0, 1]; None: ε alone.
        proximal (`bool`, defaults to `False`): apply the group lasso as a proximal step after every optimizer step
            instead of through the loss's gradient: every group θ_g ← θ_g · max(0, 1 − η_t·λ₁ / ‖θ_g‖₂), η_t the
            step's learning rate (group soft-thresholding; the term's value is still logged, not differentiated).
            Adam divides a loss gradient by its own running size per weight, so through the loss the lasso moves
            every weight by at most about η_t per step whatever λ₁, shrinking all groups alike; the proximal step
            shrinks each group's norm by η_t·λ₁ and sets the groups that fall below it to exactly zero. Not with
            `penalty_form="gate"`.
        proximal_outside_target (`bool`, defaults to `False`): with `proximal` and a keep share, the proximal step
            shrinks only the groups the shares would cut now: the intermediate rows of the FFN neurons outside each
            layer's top k and the value rows of the heads outside it (re-chosen at every step by the scores of
            `ffn_keep_share` / `heads_keep_share`); nothing else is penalised. The cut then removes rows that the
            distillation has already learnt to do without.

    Raises:
        ValueError: naming the field, for a negative λ₁, λ₂ or ε, K < 1, an unknown direction, module or form, a
            negative `threshold_every`, `proximal` with `penalty_form="gate"`, `proximal_outside_target` without
            `proximal` and a keep share, or a keep share outside (0, 1] (one that keeps no neuron / head of a layer
            is refused when the threshold is applied, naming the field).
    """

    group_lasso_weight: float = field(default=1e-4, metadata={"help": "λ₁: weight of the group-lasso term."})
    binarizing_weight: float = field(default=0.0, metadata={"help": "λ₂: weight of the θ(1−θ) term."})
    num_blocks: int = field(default=1, metadata={"help": "K: blocks per weight matrix."})
    direction: str = field(default="row", metadata={"help": "Group lasso over block rows, columns or both."})
    modules: list[str] = field(default_factory=lambda: list(ENCODER_MODULES),
                               metadata={"help": "Encoder Linears the penalty applies to."})
    epsilon: float = field(default=1e-2, metadata={"help": "ε: groups with L2 norm ≤ ε are zeroed."})
    penalty_form: str = field(default="auto", metadata={
        "help": "θ(1−θ) on the weights or on per-group gates (auto: gates when λ₂ > 0 without proximal)."})
    threshold_every: int = field(default=0, metadata={"help": "Also zero groups ≤ ε every N steps (0: end only)."})
    remove: bool = field(default=True, metadata={"help": "Physically remove zero heads / FFN neurons at the end."})
    ffn_keep_share: float | None = field(
        default=None, metadata={"help": "Target width: keep this share of FFN neurons per layer (largest norms)."})
    heads_keep_share: float | None = field(
        default=None, metadata={"help": "Target: keep this share of attention heads per layer (largest norms)."})
    proximal: bool = field(
        default=False, metadata={"help": "Group lasso as a proximal step after each optimizer step (not the loss)."})
    proximal_outside_target: bool = field(
        default=False, metadata={"help": "Proximal step only on the groups outside the keep shares' top k."})

    def __post_init__(self):
        for name in ("group_lasso_weight", "binarizing_weight", "epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                _fail(name, f"must be a number >= 0, got {value!r}")
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            _fail("num_blocks", f"must be an integer >= 1, got {self.num_blocks!r}")
        if self.direction not in DIRECTIONS:
            _fail("direction", f"must be one of {list(DIRECTIONS)}, got {self.direction!r}")
        if self.penalty_form not in PENALTY_FORMS:
            _fail("penalty_form", f"must be one of {list(PENALTY_FORMS)}, got {self.penalty_form!r}")
        if not isinstance(self.modules, (list, tuple)) or not self.modules:
            _fail("modules", f"must be a non-empty list from {list(ENCODER_MODULES)}, got {self.modules!r}")
        bad = [m for m in self.modules if m not in ENCODER_MODULES]
        if bad:
            _fail("modules", f"must be names from {list(ENCODER_MODULES)}, got {bad[0]!r}")
        self.modules = list(dict.fromkeys(self.modules))
        if not isinstance(self.threshold_every, int) or self.threshold_every < 0:
            _fail("threshold_every", f"must be an integer >= 0, got {self.threshold_every!r}")
        for name in ("ffn_keep_share", "heads_keep_share"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value <= 1):
                _fail(name, f"must be a share in (0, 1] or None, got {value!r}")
        if not isinstance(self.proximal, bool):
            _fail("proximal", f"must be True or False, got {self.proximal!r}")
        if self.proximal and self.penalty_form == "gate":
            _fail("proximal", "applies to the weights: it cannot be combined with penalty_form='gate'")
        if self.penalty_form == "auto":
            self.penalty_form = "gate" if self.binarizing_weight > 0 and not self.proximal else "weight"
        if not isinstance(self.proximal_outside_target, bool):
            _fail("proximal_outside_target", f"must be True or False, got {self.proximal_outside_target!r}")
        if self.proximal_outside_target and (not self.proximal or (self.ffn_keep_share is None
                                                                   and self.heads_keep_share is None)):
            _fail("proximal_outside_target", "needs proximal=True and ffn_keep_share or heads_keep_share")

    @property
    def directions(self) -> tuple[str, ...]:
        """`("row",)`, `("column",)` or `("row", "column")`."""
        return ("row", "column") if self.direction == "both" else (self.direction,)
