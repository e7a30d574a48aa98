"""DeepSeekMoE: shared experts plus fine-grained routed experts with biased top-k routing.

Shape legend: N tokens (B * T), D model width, E routed experts, K experts per token,
I expert hidden width, M = N * K routed token copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyseek.config import ModelConfig
from tinyseek.model.ffn import SwiGLU


class Gate(nn.Module):
    """Router: FP32 scores, a selection-only bias, group-limited top-k, normalised gates."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts = cfg.n_routed_experts
        self.top_k = cfg.n_activated_experts
        self.score_func = cfg.score_func
        self.route_scale = cfg.route_scale
        self.n_groups = cfg.n_expert_groups
        self.n_limited_groups = cfg.n_limited_groups
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.dim))
        # Auxiliary-loss-free balancing moves this bias after each optimiser step; it only
        # changes which experts are selected, never the gate values, so it gets no gradient.
        self.bias = nn.Parameter(torch.zeros(cfg.n_routed_experts), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Route x (N, D); return gate weights (N, K), expert indices (N, K), scores (N, E)."""
        # Scores in FP32: under BF16 the small differences that decide top-k would round away.
        logits = F.linear(x.float(), self.weight.float())  # (N, E)
        scores = logits.softmax(dim=-1) if self.score_func == "softmax" else logits.sigmoid()

        # Selection uses the biased scores, restricted to the best groups
        biased = scores + self.bias.float()
        if self.n_groups > 1:
            biased = self._mask_groups(biased)
        indices = biased.topk(self.top_k, dim=-1).indices  # (N, K)

        # Gate values come from the unbiased scores
        weights = scores.gather(1, indices)
        if self.score_func == "sigmoid":
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.route_scale, indices, scores

    def _mask_groups(self, biased: torch.Tensor) -> torch.Tensor:
        """Keep the n_limited_groups groups with the highest sum of their top-2 scores."""
        N = biased.shape[0]
        grouped = biased.view(N, self.n_groups, -1)  # (N, G, E / G)
        top = min(2, grouped.shape[-1])
        group_scores = grouped.topk(top, dim=-1).values.sum(dim=-1)  # (N, G)
        keep = group_scores.topk(self.n_limited_groups, dim=-1).indices
        masked = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, keep, False)
        # -inf, not 0: with a negative bias every kept score can be below zero.
        return grouped.masked_fill(masked.unsqueeze(-1), float("-inf")).view(N, -1)


class Experts(nn.Module):
    """E SwiGLU experts stored as stacked weights, run as grouped GEMMs over sorted tokens."""

    def __init__(self, n_experts: int, dim: int, inter_dim: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, dim, inter_dim))
        self.w2 = nn.Parameter(torch.empty(n_experts, inter_dim, dim))
        self.w3 = nn.Parameter(torch.empty(n_experts, dim, inter_dim))

    def params_per_expert(self) -> int:
        return self.w1[0].numel() + self.w2[0].numel() + self.w3[0].numel()

    # NOTE: torch.compile leaves this method eager, because the fake-tensor rule of
    # _grouped_mm in torch 2.13 accepts BF16 only, while the eager CPU kernel runs FP32 too.
    @torch.compiler.disable
    def forward(self, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Apply expert e to its rows of x_sorted (M, D), grouped by expert in `counts` (E,)."""
        offsets = counts.cumsum(0).to(torch.int32)
        dtype = _compute_dtype(x_sorted)
        x_sorted = x_sorted.to(dtype)
        # One grouped GEMM for the gate and up projections: half the kernel launches, and
        # each expert's GEMM is twice as wide, which small experts need to use the machine.
        w13 = torch.cat([self.w1.to(dtype), self.w3.to(dtype)], dim=-1)  # (E, D, 2I)
        gate, up = torch._grouped_mm(x_sorted, w13, offs=offsets).chunk(2, dim=-1)  # (M, I) each
        return torch._grouped_mm(F.silu(gate) * up, self.w2.to(dtype), offs=offsets)  # (M, D)


class _Dispatch(torch.autograd.Function):
    """Copy each token to its K sorted slots, and sum the K slot gradients in the backward.

    Indexing with repeated token ids would make the backward accumulate in a
    thread-dependent order. This backward gathers the K gradients of a token and sums them
    in a fixed order, so CPU runs repeat exactly.
    """

    @staticmethod
    def forward(ctx, x, order, inverse, top_k):
        ctx.save_for_backward(inverse)
        ctx.top_k = top_k
        return x.index_select(0, order // top_k)  # (M, D)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        per_copy = grad.index_select(0, inverse)  # (M, D) in token-copy order
        return per_copy.view(-1, ctx.top_k, grad.shape[-1]).sum(dim=1), None, None, None


class _PermuteRows(torch.autograd.Function):
    """Row permutation x[perm] whose backward is the gather grad[inverse], not a scatter."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Pick the dtype of the expert GEMMs: FP32 on CPU, else the autocast dtype when it is on.

    Grouped GEMMs are not autocast ops, so the choice is made here. With torch 2.13 a BF16
    grouped GEMM on CPU builds a oneDNN kernel for each new group shape, and routing changes
    the shapes every step. In a 12-step loop of the small MLA + MoE model, BF16 experts ran
    10 to 30 % slower than FP32 experts and grew resident memory by about 600 MiB more.
    CPU runs therefore keep FP32.
    """
    if x.device.type == "cpu":
        return torch.float32
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class MoE(nn.Module):
    """Shared experts on every token plus the gated sum of K routed experts; no token drops.

    Expert loads are accumulated for balancing and telemetry: `train_counts` in training mode
    (read and reset after each optimiser step) and `eval_counts` in evaluation mode.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts = cfg.n_routed_experts
        self.top_k = cfg.n_activated_experts
        self.balance = set(cfg.balance)
        self.seq_aux_alpha = cfg.seq_aux_alpha
        self.aux_loss_alpha = cfg.aux_loss_alpha
        self.gate = Gate(cfg)
        self.experts = Experts(cfg.n_routed_experts, cfg.dim, cfg.moe_inter_dim)
        self.shared_experts = (
            SwiGLU(cfg.dim, cfg.n_shared_experts * cfg.moe_inter_dim)
            if cfg.n_shared_experts > 0
            else None
        )
        self.register_buffer("train_counts", torch.zeros(self.n_experts), persistent=False)
        self.register_buffer("eval_counts", torch.zeros(self.n_experts), persistent=False)
        self.aux_loss = torch.zeros(())
        self.router_entropy = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        x_flat = x.reshape(B * T, D)  # (N, D)
        weights, indices, scores = self.gate(x_flat)

        # Dispatch: sort the N * K token copies by expert
        flat_indices = indices.flatten()  # (M,)
        order = flat_indices.argsort(stable=True)  # sorted slot -> token copy
        slots = torch.arange(len(order), device=order.device)
        inverse = torch.empty_like(order).scatter_(0, order, slots)  # token copy -> sorted slot
        counts = torch.bincount(flat_indices, minlength=self.n_experts)  # (E,)
        x_sorted = _Dispatch.apply(x_flat, order, inverse, self.top_k)  # (M, D)
        routed = self.experts(x_sorted, counts)  # (M, D)

        # Combine: back to token order, then the gate-weighted sum over each token's K copies
        routed = _PermuteRows.apply(routed, inverse, order).view(-1, self.top_k, D)  # (N, K, D)
        out = (routed * weights.unsqueeze(-1).to(routed.dtype)).sum(dim=1)  # (N, D)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x_flat)

        self._record(counts, indices.view(B, T, -1), scores.view(B, T, -1))
        return out.view(B, T, D).to(x.dtype)

    @torch.no_grad()
    def _record_counts(self, counts: torch.Tensor) -> None:
        target = self.train_counts if self.training else self.eval_counts
        target += counts.to(target.dtype)

    def _record(self, counts: torch.Tensor, indices: torch.Tensor, scores: torch.Tensor) -> None:
        self._record_counts(counts)
        probs = scores / scores.sum(dim=-1, keepdim=True)  # (B, T, E), rows sum to 1
        with torch.no_grad():
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        self.router_entropy = entropy
        self.aux_loss = self._balance_loss(indices, probs) if self.training else torch.zeros(())

    def _balance_loss(self, indices: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Sequence-wise (V3) and expert-level (V2) balance losses, each if switched on."""
        B, T, K = indices.shape
        loss = probs.new_zeros(())
        one_hot = F.one_hot(indices, self.n_experts).sum(dim=2).float()  # (B, T, E)
        if "seq_aux" in self.balance:
            f = one_hot.sum(dim=1) * self.n_experts / (K * T)  # (B, E)
            p = probs.mean(dim=1)  # (B, E)
            loss = loss + self.seq_aux_alpha * (f * p).sum(dim=-1).mean()
        if "aux_loss" in self.balance:
            f = one_hot.sum(dim=(0, 1)) * self.n_experts / (K * B * T)  # (E,)
            p = probs.mean(dim=(0, 1))
            loss = loss + self.aux_loss_alpha * (f * p).sum()
        return loss

    @torch.no_grad()
    def update_bias(self, counts: torch.Tensor, speed: float) -> None:
        """Auxiliary-loss-free step: b_i += speed * sign(mean load - load_i)."""
        self.gate.bias += speed * torch.sign(counts.mean() - counts)


def max_violation(counts: torch.Tensor) -> float:
    """MaxVio = (max load - mean load) / mean load."""
    mean = counts.float().mean()
    return float((counts.float().max() - mean) / mean) if mean > 0 else 0.0


def load_telemetry(
    counts: torch.Tensor, moe_layers: list[MoE], first_layer: int
) -> dict[str, torch.Tensor]:
    """Balance metrics of one batch from per-layer expert counts (layers, E).

    Per-layer keys use the block index, so the first MoE layer is `first_layer`.
    """
    counts = counts.float()
    mean = counts.mean(dim=1).clamp_min(1e-9)
    maxvio = (counts.max(dim=1).values - mean) / mean  # (layers,)
    biases = torch.stack([moe.gate.bias for moe in moe_layers])
    metrics = {
        "maxvio": maxvio.mean(),
        "maxvio_max": maxvio.max(),
        "dead_experts": (counts == 0).sum().float(),
        "router_entropy": torch.stack([moe.router_entropy for moe in moe_layers]).mean(),
        "bias_absmax": biases.abs().max(),
        "bias_std": biases.std(),
    }
    for offset, value in enumerate(maxvio):
        metrics[f"maxvio_layer{first_layer + offset}"] = value
    return metrics
