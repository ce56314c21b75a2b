"""Ranking losses. Graph models: BPR and the embedding L2 term (algorithms.md §1.3, §2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """BPR: mean over the batch (and over negatives) of ``-ln σ(ŷ_ui - ŷ_uj) = softplus(ŷ_uj - ŷ_ui)``.

    ``pos_scores``: ``(B,)``; ``neg_scores``: ``(B, n_neg)``. With a boolean ``mask`` ``(B, n_neg)``
    (True = a valid negative, e.g. in-batch negatives that are not the user's positives) the mean runs
    over the valid pairs only: ``Σ m_bj softplus(·) / max(1, Σ m_bj)`` (0 when no pair is valid).
    """
    pairwise = F.softplus(neg_scores - pos_scores[:, None])
    if mask is None:
        return pairwise.mean()
    return torch.where(mask, pairwise, 0.0).sum() / mask.sum().clamp(min=1)


def embedding_l2(table: torch.Tensor, row_weights: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The LightGCN/NGCF L2 term ``½ Σ_b (‖e_u‖² + ‖e_i‖² + mean_j ‖e_j‖²) / B`` written over a table's rows:
    ``½ Σ_r w_r ‖e_r‖² / B``, ``w_r`` the row's uses in the batch (1 per use as a user or positive, ``1/c_b`` per
    valid negative of batch row ``b`` with ``c_b`` valid negatives: :func:`recsys.models.graph_module.l2_row_weights`).

    With one explicit negative it is exactly the papers' regulariser ``½(‖e_u‖² + ‖e_i‖² + ‖e_j‖²)`` summed over
    the batch and divided by its size (multiplied by λ in the module); with a masked (in-batch) row the negative
    term keeps the scale of one negative whatever the number of negatives (0 with none). Its backward is one
    dense elementwise product, where gathering the batch's rows would scatter-add them back.
    """
    return 0.5 * _WeightedSquaredNorms.apply(table, row_weights) / batch_size


class _WeightedSquaredNorms(torch.autograd.Function):
    """``Σ_r w_r ‖e_r‖²`` with its gradient ``2 w_r e_r`` written out: one pass over the table each way
    (autograd's ``pow → sum → mv`` takes five). Computed in at least float32 with autocast off (a half-precision
    dot product of ~10⁴ terms loses the penalty's digits, or overflows in float16); the gradient comes back in the
    table's dtype."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        dtype = torch.promote_types(table.dtype, torch.float32)
        ctx.save_for_backward(table, weights)
        with torch.autocast(device_type=table.device.type, enabled=False):
            return weights.to(dtype) @ torch.linalg.vector_norm(table.to(dtype), dim=-1).square()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        table, weights = ctx.saved_tensors
        return table * (weights * (2 * grad)).to(table.dtype)[:, None], None


# -- GRU4Rec losses (algorithms.md §3.4) -------------------------------------------------------------
# ``scores`` is the (b, C) matrix O of a session-parallel step: row r is lane r, column r its target (the
# diagonal), the other columns the other lanes' targets followed by the n_sample extra negatives shared by
# the mini-batch. Every function returns the per-row losses (b,); the module sums them and divides by the
# configured batch size, as the official code does.


def _diagonal(scores: torch.Tensor) -> torch.Tensor:
    return scores.diagonal()[:, None]


def softmax_over_negatives(scores: torch.Tensor) -> torch.Tensor:
    """``s_bj = exp(o_bj) / Σ_{k≠b} exp(o_bk)`` for ``j ≠ b`` and ``s_bb = 0`` (the positive left out)."""
    eye = torch.eye(scores.shape[0], scores.shape[1], dtype=torch.bool, device=scores.device)
    return scores.masked_fill(eye, -torch.inf).softmax(1)


def session_xe_loss(scores: torch.Tensor, log_q: torch.Tensor | None = None, logq: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the ``C`` columns: ``−log softmax(o_b − logq · log Q)_b``.

    ``log_q`` ``(C,)``: log of the sampling probability of every column (GRU4Rec: ``Q = supp(i)`` for the
    in-batch targets, ``supp(i)^alpha`` for the extra samples); applied only when ``logq > 0``.
    """
    if log_q is not None and logq > 0:
        scores = scores - logq * log_q[None, :]
    return -scores.log_softmax(1).diagonal()


def weighted_xe_loss_and_grad(
    scores: torch.Tensor, log_weights: torch.Tensor, targets: torch.Tensor, target_shift: torch.Tensor | None = None,
    grad_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over candidates with multiplicities, and the gradient of ``grad_scale ·`` its sum, in closed
    form: ``loss_b = log Σ_k w_k exp(s_bk) − s_b,t_b + shift_b``,
    ``∂/∂s_bk = w_k exp(s_bk) / Σ_j w_j exp(s_bj) − [k = t_b]``, given ``log_weights = log w``. ``scores`` may be
    overwritten.

    :func:`session_xe_loss` over ``C`` columns is this over the distinct column items with
    ``w_k = Σ_{columns j of item k} exp(−logq · log Q_j)`` and ``shift_b = logq · log Q`` of row b's target column.
    Computed in at least float32 (``log_weights`` float32 or wider). Candidates of weight 0 (log-weight −inf) take
    no part (gradient exactly 0). The exponents ``s_bk + log w_k`` are taken from the row's largest and clamped to
    [−80, 0]: no overflow and no denormals (whose ``exp`` takes a slow path on the CPU); the clamp raises the terms
    by at most ``K e⁻⁸⁰`` in all against a sum of at least 1, a relative error under ``K · 2·10⁻³⁵``."""
    target_scores = scores.gather(1, targets[:, None])
    dtype = torch.promote_types(scores.dtype, log_weights.dtype)
    z = scores.add_(log_weights) if scores.dtype == dtype else scores + log_weights  # (in place where it may)
    top = z.amax(1, keepdim=True)
    present = (log_weights > -torch.inf).to(dtype)  # (a 0/1 factor: ~5× faster than a broadcast masked_fill_)
    p = z.sub_(top).clamp_(-80.0, 0.0).exp_().mul_(present)
    total = p.sum(1, keepdim=True)
    loss = (top + total.log()).squeeze(1) - target_scores.squeeze(1).to(dtype)
    if target_shift is not None:
        loss = loss + target_shift
    grad = p.div_(total / grad_scale if grad_scale != 1.0 else total)
    grad.scatter_add_(1, targets[:, None], torch.full_like(target_scores, -grad_scale, dtype=dtype))
    return loss, grad


def bpr_max_loss(scores: torch.Tensor, bpreg: float = 1.0, elu_param: float = 0.0) -> torch.Tensor:
    """BPR-max: ``−log Σ_{j≠b} s_bj σ(o_bb − o_bj) + bpreg · Σ_{j≠b} s_bj o_bj²`` with ``s`` the softmax over
    the row's negatives; the scores first go through ``ELU(elu_param)`` when ``elu_param > 0`` (the final
    activation of the official BPR-max configurations)."""
    if scores.shape[1] < 2:
        return scores.sum(1) * 0.0
    if elu_param > 0:
        scores = F.elu(scores, alpha=elu_param)
    s = softmax_over_negatives(scores)
    ranked = (torch.sigmoid(_diagonal(scores) - scores) * s).sum(1)
    return -torch.log(ranked + 1e-24) + bpreg * (s * scores.pow(2)).sum(1)


def bpr_max_loss_and_grad(
    scores: torch.Tensor, multiplicities: torch.Tensor, targets: torch.Tensor, bpreg: float = 1.0,
    elu_param: float = 0.0, grad_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`bpr_max_loss` over ``C ≥ 2`` columns computed over their distinct items (candidates), and the
    gradient of ``grad_scale ·`` its sum in closed form. ``scores`` ``(b, K)`` may be overwritten.

    ``multiplicities`` ``(K,)``: how many columns hold each candidate (0: none); row b's negatives are all columns
    but its own target column, so candidate k counts ``m_bk = m_k − [k = t_b]`` times. With ``o = ELU(x)`` (when
    ``elu_param > 0``), ``s_bk = m_bk e^{o_bk} / Σ_j m_bj e^{o_bj}``, ``σ_bk = σ(o_bt − o_bk)``,
    ``R_b = Σ_k s_bk σ_bk`` and ``Q_b = Σ_k s_bk o_bk²``: ``loss_b = −log(R_b + 10⁻²⁴) + bpreg · Q_b``,
    ``∂loss_b/∂o_bk = s_bk [(R_b − σ_bk²) / (R_b + 10⁻²⁴) + bpreg (o_bk² + 2 o_bk − Q_b)]`` plus
    ``−(R_b − Σ_k s_bk σ_bk²) / (R_b + 10⁻²⁴)`` at the target (through ``o_bt`` in every ``σ_bk``); ELU's
    derivative is 1 for ``x > 0``, ``o + elu_param`` else. The exponents are taken from the row's largest negative
    score and clamped at −80 (as in :func:`weighted_xe_loss_and_grad`: no denormals; the clamp raises the softmax
    weights by at most ``C e⁻⁸⁰`` in all, against a denominator of at least 1). Computed in at least the dtype of
    ``multiplicities`` (float32 or wider)."""
    dtype = torch.promote_types(scores.dtype, multiplicities.dtype)
    x = scores if scores.dtype == dtype else scores.to(dtype)
    o = F.elu_(x, alpha=elu_param) if elu_param > 0 else x
    t = targets[:, None]
    pos = o.gather(1, t)
    m = multiplicities.to(dtype)
    m_t = m.index_select(0, targets)[:, None]
    # the largest negative score of each row: candidates without a column, and the target when its own column is
    # its only one, left out
    top = o.masked_fill(m == 0, -torch.inf)
    top.scatter_(1, t, pos.masked_fill(m_t == 1, -torch.inf))
    top = top.amax(1, keepdim=True)
    e = torch.sub(o, top).clamp_(-80.0, 0.0).exp_()
    e_t = e.gather(1, t)
    s = e.mul_(m).scatter_add_(1, t, e_t.neg_())  # m_bk e^{o_bk − top} (exactly 0 where m_bk = 0)
    s = s.div_(s.sum(1, keepdim=True))
    sigma = torch.sub(pos, o).sigmoid_()
    s_sigma = s * sigma
    ranked = s_sigma.sum(1, keepdim=True)
    ranked_sq = s_sigma.mul_(sigma).sum(1, keepdim=True)  # Σ s σ²
    o_sq = o * o
    reg = (s * o_sq).sum(1, keepdim=True)
    loss = (bpreg * reg - torch.log(ranked + 1e-24)).squeeze(1)
    inv = grad_scale / (ranked + 1e-24)
    grad = torch.addcmul(ranked * inv, sigma.mul_(sigma), inv, value=-1.0)  # (R − σ²) / (R + ε), scaled
    if bpreg != 0:
        grad.add_(o_sq.add_(o, alpha=2.0).sub_(reg), alpha=bpreg * grad_scale)
    grad.mul_(s).scatter_add_(1, t, (ranked_sq - ranked) * inv)
    if elu_param > 0:
        grad = torch.ops.aten.elu_backward(grad, elu_param, 1, 1, True, o)
    return loss, grad


def top1_loss(scores: torch.Tensor) -> torch.Tensor:
    """TOP1 (Theano GRU4Rec): ``mean_j [σ(o_bj − o_bb) + σ(o_bj²)] − σ(o_bb²) / C`` (the mean runs over all C
    columns; the last term removes the positive's own regularisation term)."""
    pos = _diagonal(scores)
    return (torch.sigmoid(scores - pos) + torch.sigmoid(scores.pow(2))).mean(1) - torch.sigmoid(pos.squeeze(1).pow(2)) / scores.shape[1]


def session_bpr_loss(scores: torch.Tensor) -> torch.Tensor:
    """BPR over the session-parallel score matrix (Theano GRU4Rec): ``mean_j −log σ(o_bb − o_bj)`` over all C
    columns (the diagonal adds the constant ``log 2 / C``)."""
    return -F.logsigmoid(_diagonal(scores) - scores).mean(1)


def top1_max_loss(scores: torch.Tensor) -> torch.Tensor:
    """TOP1-max: ``Σ_{j≠b} s_bj [σ(o_bj − o_bb) + σ(o_bj²)]`` with ``s`` the softmax over the row's negatives."""
    if scores.shape[1] < 2:
        return scores.sum(1) * 0.0
    s = softmax_over_negatives(scores)
    return (s * (torch.sigmoid(scores - _diagonal(scores)) + torch.sigmoid(scores.pow(2)))).sum(1)


SESSION_LOSSES = ("cross-entropy", "bpr-max", "top1", "bpr", "top1-max")
