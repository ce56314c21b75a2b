"""Ranking losses: BPR and the embedding L2 term of the graph models (Rendle et al., UAI'09; He et al., SIGIR'20),
the InfoNCE term of SimGCL (Yu et al., SIGIR'22), GRU4Rec's session losses (Hidasi & Karatzoglou, CIKM'18) and
SASRec's (Kang & McAuley, ICDM'18; Klenitskiy & Vasilev, RecSys'23; Petrov & Macdonald, RecSys'23)."""

from __future__ import annotations

import math

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
    the batch and divided by its size (He et al., SIGIR'20, Eq. 15; multiplied by λ in the module); with a masked
    (in-batch) row the negative term keeps the scale of one negative whatever the number of negatives (0 with
    none). Computed in at least float32 with autocast off (a half-precision dot product of ~10⁴ terms loses the
    penalty's digits, or overflows in float16).
    """
    dtype = torch.promote_types(table.dtype, torch.float32)
    with torch.autocast(device_type=table.device.type, enabled=False):
        norms = table.to(dtype).square().sum(-1)
        return 0.5 * (row_weights.to(dtype) @ norms) / batch_size


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between two views ``(n, d)`` of the same ``n`` nodes (as in SimGCL, Yu et al., SIGIR'22, §2.1):

    ``L = (1/n) Σ_i −log( exp(z′_iᵀ z″_i / τ) / Σ_j exp(z′_iᵀ z″_j / τ) )``, ``z = e / ‖e‖₂`` (cosine similarity),

    one direction (view 1's rows against all of view 2's), the positive in the denominator. Computed in at least
    float32 with autocast off."""
    dtype = torch.promote_types(view1.dtype, torch.float32)
    with torch.autocast(device_type=view1.device.type, enabled=False):
        z1, z2 = F.normalize(view1.to(dtype), dim=-1), F.normalize(view2.to(dtype), dim=-1)
        logits = z1 @ z2.T / temperature
        return (torch.logsumexp(logits, 1) - logits.diagonal()).mean()


# -- GRU4Rec losses (Hidasi & Karatzoglou, CIKM'18, §3) -------------------------------------------------------------
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


def weighted_xe_loss(
    scores: torch.Tensor, log_weights: torch.Tensor, targets: torch.Tensor, target_shift: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over candidates with multiplicities: ``loss_b = log Σ_k w_k exp(s_bk) − s_b,t_b + shift_b``
    (per row, ``(b,)``), given ``log_weights = log w`` ``(K,)`` and each row's target candidate ``targets`` ``(b,)``.

    :func:`session_xe_loss` over ``C`` columns equals this over the columns' distinct items (the candidates)
    with ``w_k = Σ_{columns j of item k} exp(−logq · log Q_j)`` and ``shift_b = logq · log Q`` of row b's target
    column: the same sum of exponentials, grouped by item, so each item's score is computed once. Computed in at
    least float32, as ``cross_entropy(s + log w, t) + log w_t`` (one fused log-softmax)."""
    dtype = torch.promote_types(scores.dtype, torch.float32)
    log_weights = log_weights.to(dtype)
    loss = F.cross_entropy(scores.to(dtype) + log_weights, targets, reduction="none") + log_weights[targets]
    return loss if target_shift is None else loss + target_shift


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


def weighted_bpr_max_loss(
    scores: torch.Tensor, counts: torch.Tensor, targets: torch.Tensor, bpreg: float = 1.0, elu_param: float = 0.0
) -> torch.Tensor:
    """:func:`bpr_max_loss` over ``C ≥ 2`` columns computed over their distinct items (candidates): ``scores``
    ``(b, K)``, ``counts`` ``(K,)`` each candidate's number of columns, ``targets`` ``(b,)`` each row's target
    candidate. Row b's negatives are every column but its own, so candidate k counts ``m_bk = m_k − [k = t_b]``
    times: ``s_bk = m_bk e^{o_bk} / Σ_j m_bj e^{o_bj}`` (a softmax of ``o + log m``), and ``loss_b = −log Σ_k s_bk
    σ(o_bt − o_bk) + bpreg · Σ_k s_bk o_bk²`` — the column form's sums grouped by item (``o`` after
    ``ELU(elu_param)`` when ``elu_param > 0``). ``log m_bk`` is ``log m_k`` but at the target, where it is
    ``log(m_t − 1)`` (−∞ when the target fills one column only: ``s = 0`` there)."""
    if elu_param > 0:
        scores = F.elu(scores, alpha=elu_param)
    counts = counts.to(scores.dtype)
    own = targets[:, None]
    own_correction = torch.log1p(-1.0 / counts.gather(0, targets))[:, None]  # log((m_t − 1) / m_t)
    logits = (scores + counts.log()).scatter_add_(1, own, own_correction)
    s = torch.softmax(logits, 1)
    ranked = (s * torch.sigmoid(scores.gather(1, own) - scores)).sum(1)
    return -torch.log(ranked + 1e-24) + bpreg * (s * (scores * scores)).sum(1)


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


# -- SASRec losses ---------------------------------------------------------------------------------------------------
# Per target position m of a batch of sequences: ``pos`` (M,) the score s⁺ of its next item, ``neg`` (M, k) the
# scores s⁻ of its k sampled negatives, or ``scores`` (M, N) over the whole catalogue. Every function returns the
# per-position losses (M,), computed in at least float32; the module averages them over the target positions.


def _at_least_float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def softmax_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Full cross-entropy over the catalogue (Klenitskiy & Vasilev, RecSys'23, "SASRec+"): ``−log softmax(s)_target``
    ``= −s_target + log Σ_i e^{s_i}`` per row of ``scores`` ``(M, N)``."""
    (scores,) = _at_least_float32(scores)
    return F.cross_entropy(scores, targets, reduction="none")


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's exponent of the positive's probability (Petrov & Macdonald, RecSys'23, gBCE):
    ``β = α (t (1 − 1/α) + 1/α)`` with the negative sampling rate ``α = k / (|I| − 1)``; ``t = 0`` → ``β = 1`` (BCE),
    ``t = 1`` → ``β = α`` (calibrated probabilities)."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"gBCE t={t} must be in [0, 1]")
    alpha = num_negatives / max(num_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def binary_sampled_loss(pos: torch.Tensor, neg: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """gBCE (Petrov & Macdonald, RecSys'23): ``−1/(k+1) · [β log σ(s⁺) + Σ_j log(1 − σ(s⁻_j))]``.

    ``β = 1`` is binary cross-entropy with ``k`` sampled negatives, SASRec's loss (Kang & McAuley, ICDM'18, §III-E:
    ``k = 1``; its code sums the two terms, twice this value, which Adam does not see). Uses
    ``log(1 − σ(x)) = log σ(−x)``."""
    pos, neg = _at_least_float32(pos, neg)
    return -(beta * F.logsigmoid(pos) + F.logsigmoid(-neg).sum(1)) / (neg.shape[1] + 1)


def sampled_softmax_loss(pos: torch.Tensor, neg: torch.Tensor, log_kq: torch.Tensor | None = None,
                         valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sampled softmax over the positive and its ``k`` negatives, with the logQ correction:
    ``−s⁺ + log(e^{s⁺} + Σ_j m_j e^{s⁻_j − log(k q_j)})``.

    ``log_kq`` ``(M, k)``: ``log(k · q_j)`` with ``q_j`` the probability the proposal drew negative j (importance
    weights of the partition function: Bengio & Senécal, IEEE TNN'08; Yi et al., RecSys'19); None: no correction
    (Klenitskiy & Vasilev, RecSys'23: uniform negatives). ``valid`` ``(M, k)`` bool: ``m_j``, False for a negative
    that is the target itself (an accidental hit). With all N items as the negatives (the target masked) and
    ``q = 1/N`` this is :func:`softmax_loss`."""
    pos, neg = _at_least_float32(pos, neg)
    if log_kq is not None:
        neg = neg - log_kq.to(neg.dtype)
    if valid is not None:
        neg = neg.masked_fill(~valid, -math.inf)
    return torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos


SASREC_LOSSES = ("ce", "bce", "sampled-ce", "gbce")
