"""SASRec: sequence batches, the network's causality and padding, its losses and its next-item evaluation, each
against a direct per-session / per-event / per-element reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.data.sequence_batches import PAD, SequenceChunks, sequence_batch, sequence_examples
from recsys.data.session_batches import SessionParallelChunks
from recsys.errors import ConfigError
from recsys.info import SessionInfo, SessionSequences
from recsys.losses import binary_sampled_loss, gbce_beta, sampled_softmax_loss, softmax_loss
from recsys.metrics import next_item_ranks
from recsys.models.components.sasrec import SASRecNet
from recsys.models.sasrec_module import SASRec
from recsys.models.session_recommender import session_steps
from recsys.sampling import PopularityNegativeSampler, SessionNegativeSampler

NUM_ITEMS = 12


def sessions_of(lists: list[list[int]]) -> SessionSequences:
    items = [i for s in lists for i in s]
    return SessionSequences.from_lengths([len(s) for s in lists], items, np.arange(len(items), dtype=np.float64))


SESSIONS = [[3, 1, 4, 1, 5, 9, 2, 6], [7], [2, 7], [1, 8, 2, 8, 1], [0, 11, 10], [5, 5, 5, 5]]


def reference_windows(lists: list[list[int]], max_len: int, windows: str) -> list[list[int]]:
    """Per session, from its end: windows of max_len targets overlapping by one event (all) or the last (last)."""
    out = []
    for s in lists:
        end = len(s)
        while end >= 2:
            out.append(s[max(0, end - max_len - 1):end])
            end -= max_len
            if windows == "last":
                break
    return out


def reference_batch(examples: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = max(len(x) - 1 for x in examples)
    inputs = np.full((len(examples), w), PAD)
    targets = np.full((len(examples), w), PAD)
    for r, x in enumerate(examples):
        m = len(x) - 1
        inputs[r, w - m:] = x[:-1]
        targets[r, w - m:] = x[1:]
    return inputs, targets, targets != PAD


@pytest.mark.parametrize("windows", ["all", "last"])
@pytest.mark.parametrize("max_len", [1, 3, 50])
def test_sequence_batches_equal_a_per_session_reference(windows, max_len):
    sessions = sessions_of(SESSIONS)
    ex = sequence_examples(sessions, max_len, windows)
    got = [sessions.items[a:b].tolist() for a, b in zip(ex.start, ex.stop, strict=True)]
    want = reference_windows(SESSIONS, max_len, windows)
    assert got == want
    batch = sequence_batch(torch.from_numpy(sessions.items), torch.from_numpy(ex.start), torch.from_numpy(ex.stop))
    inputs, targets, mask = reference_batch(want)
    assert batch["inputs"].tolist() == inputs.tolist() and batch["targets"].tolist() == targets.tolist()
    assert batch["mask"].tolist() == mask.tolist()
    if windows == "all":  # every transition of the split is a target exactly once
        assert int(batch["mask"].sum()) == sum(len(s) - 1 for s in SESSIONS)


def test_sequence_batches_refuse_gru4rec_shared_negatives():
    with pytest.raises(ConfigError, match=r"sampler=gru4rec .* sampler=uniform or popularity"):
        SequenceChunks(sessions_of(SESSIONS), 4, 3, negatives=SessionNegativeSampler(n_sample=8, alpha=0.5))


def test_an_epoch_covers_every_example_once_per_rank_split_with_seeded_negatives():
    sessions = sessions_of(SESSIONS * 5)
    sampler = PopularityNegativeSampler(num_negatives=3, alpha=1.0).bind(
        item_counts=torch.bincount(torch.from_numpy(sessions.items), minlength=NUM_ITEMS), num_items=NUM_ITEMS)
    ranks = [SequenceChunks(sessions, 4, 3, "all", rank=r, world_size=2, steps_per_chunk=2, negatives=sampler, seed=5)
             for r in range(2)]
    assert ranks[0].num_steps == ranks[1].num_steps and len(ranks[0]) == math.ceil(ranks[0].num_steps / 2)
    seen = []
    for chunks in ranks:
        chunks.set_epoch(3)
        steps = [step for chunk in chunks for step in chunk]
        assert len(steps) == chunks.num_steps
        for step in steps:
            m = int(step["mask"].sum())
            assert step["negatives"].shape == (m, 3) and step["neg_log_q"].shape == (m, 3)
            expected = (sampler.proposal_weights() / sampler.proposal_weights().sum()).log()
            assert torch.allclose(step["neg_log_q"].double(), expected[step["negatives"]], atol=1e-6)
            seen += [tuple(r[r != PAD].tolist()) + (int(t[-1]),) for r, t in zip(step["inputs"], step["targets"],
                                                                                 strict=True)]
        again = chunks.chunk(1, 2)[0]  # a step on its own: the same batch and negatives
        assert all(torch.equal(again[k], steps[1][k]) for k in steps[1])
    ex = sequence_examples(sessions, 3)
    assert sorted(seen) == sorted(tuple(sessions.items[a:b].tolist()) for a, b in zip(ex.start, ex.stop, strict=True))
    ranks[0].set_epoch(4)
    assert not torch.equal(next(iter(ranks[0]))[0]["inputs"], ranks[0].chunk(0, 1, epoch=3)[0]["inputs"])


@pytest.mark.parametrize("norm_first", [True, False])
def test_an_earlier_position_does_not_see_a_later_item_and_padding_is_invisible(norm_first):
    torch.manual_seed(0)
    net = SASRecNet(NUM_ITEMS, embedding_dim=8, num_blocks=2, num_heads=2, max_len=6, dropout=0.0,
                    norm_first=norm_first).eval()
    seq = torch.tensor([[PAD, PAD, 3, 1, 4, 1], [2, 7, 1, 8, 2, 8]])
    with torch.no_grad():
        out = net(seq)
        for j in range(2, 6):
            changed = seq.clone()
            changed[:, j] = (changed[:, j] + 5) % NUM_ITEMS
            other = net(changed)
            assert torch.equal(other[:, :j], out[:, :j]), j  # bit for bit
            assert not torch.allclose(other[:, j:], out[:, j:])
        # leading padding columns dropped: the same outputs at the kept columns
        assert torch.allclose(net(seq[:1, 2:]), out[:1, 2:], atol=1e-6)
    with torch.enable_grad():  # the training code path (no fused inference kernel) gives the same numbers
        assert torch.allclose(net(seq), out, atol=1e-5)


@pytest.mark.parametrize(("key", "kwargs"), [
    ("model.num_heads", {"embedding_dim": 10, "num_heads": 3}), ("model.max_len", {"max_len": 0}),
    ("model.dropout", {"dropout": 1.0}), ("model.embedding_dim", {"embedding_dim": 0}),
])
def test_impossible_sizes_name_the_key(key, kwargs):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        SASRecNet(NUM_ITEMS, **kwargs)


@pytest.fixture
def scores() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64), \
        torch.randn(4, NUM_ITEMS, generator=g, dtype=torch.float64) * 2


def test_losses_equal_element_by_element_formulas(scores):
    pos, neg, full = scores
    targets = torch.tensor([0, 5, 11, 3])
    log_kq = torch.log(torch.tensor([[0.5, 1.0, 2.0]] * 4, dtype=torch.float64))
    valid = torch.tensor([[True, True, True], [False, True, True], [True, True, False], [True, True, True]])
    beta = gbce_beta(3, NUM_ITEMS, 0.75)
    alpha = 3 / (NUM_ITEMS - 1)
    assert beta == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    assert gbce_beta(3, NUM_ITEMS, 0.0) == 1.0 and gbce_beta(3, NUM_ITEMS, 1.0) == pytest.approx(alpha)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for m in range(4):
        p, n, row, t = pos[m].item(), neg[m].tolist(), full[m].tolist(), int(targets[m])
        ce = -math.log(math.exp(row[t]) / sum(math.exp(v) for v in row))
        assert softmax_loss(full, targets)[m].item() == pytest.approx(ce)
        for b in (1.0, beta):
            want = -(b * math.log(sig(p)) + sum(math.log(1 - sig(v)) for v in n)) / 4
            assert binary_sampled_loss(pos, neg, b)[m].item() == pytest.approx(want)
        kept = [math.exp(v - c) for v, c, ok in zip(n, log_kq[m].tolist(), valid[m].tolist(), strict=True) if ok]
        want = -p + math.log(math.exp(p) + sum(kept))
        assert sampled_softmax_loss(pos, neg, log_kq, valid)[m].item() == pytest.approx(want)
        plain = -p + math.log(math.exp(p) + sum(math.exp(v) for v in n))
        assert sampled_softmax_loss(pos, neg)[m].item() == pytest.approx(plain)


def session_info(train: SessionSequences, max_len: int = 4) -> SessionInfo:
    support = torch.bincount(torch.from_numpy(train.items), minlength=NUM_ITEMS)
    return SessionInfo(NUM_ITEMS, support, 4, 0, 0.0, train, "sequences", max_len)


def model(loss: str = "ce", max_len: int = 4, **kwargs) -> SASRec:
    torch.manual_seed(1)
    train = sessions_of(SESSIONS)
    return SASRec(session_info(train, max_len), optimizer=None, loss=loss, embedding_dim=8, num_heads=2,
                  max_len=max_len, dropout=0.0, **kwargs)


def a_step(k: int) -> dict[str, torch.Tensor]:
    sessions = sessions_of(SESSIONS)
    ex = sequence_examples(sessions, 4)
    step = sequence_batch(torch.from_numpy(sessions.items), torch.from_numpy(ex.start), torch.from_numpy(ex.stop))
    m = int(step["mask"].sum())
    g = torch.Generator().manual_seed(2)
    return step | {"negatives": torch.randint(NUM_ITEMS, (m, k), generator=g),
                   "neg_log_q": torch.full((m, k), -math.log(NUM_ITEMS))}


def position_losses(loss: str, step: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    net = model(loss, **kwargs)
    with torch.no_grad():
        outputs = net.net(step["inputs"])[step["mask"]]
        return net.position_losses(outputs, step["targets"][step["mask"]], step)


def test_gbce_with_t_0_is_bce_and_sampled_ce_over_every_item_is_ce():
    step = a_step(5)
    bce = position_losses("bce", step)
    assert torch.equal(position_losses("gbce", step, gbce_t=0.0), bce)
    assert not torch.allclose(position_losses("gbce", step, gbce_t=1.0), bce)
    m = int(step["mask"].sum())
    every = step | {"negatives": torch.arange(NUM_ITEMS).expand(m, -1),
                    "neg_log_q": torch.full((m, NUM_ITEMS), -math.log(NUM_ITEMS))}  # uniform q = 1/N
    assert torch.allclose(position_losses("sampled-ce", every), position_losses("ce", step), atol=1e-5)
    loss = model("bce").batch_loss(step)[0]
    loss.backward()  # plain autograd reaches the item table


def test_unknown_loss_and_mismatched_lengths_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.loss=softmax: must be one of ce, "):
        model("softmax")
    with pytest.raises(ConfigError, match=r"data\.max_len=4 differs from model\.max_len=6"):
        SASRec(session_info(sessions_of(SESSIONS), 4), optimizer=None, max_len=6)


@pytest.mark.parametrize("max_len", [2, 4])
def test_evaluation_ranks_every_event_as_a_per_event_reference(max_len):
    """Session-parallel evaluation (3 lanes, reused) gives every event the rank of the network run by hand on the
    last max_len items of its session's prefix."""
    test = sessions_of(SESSIONS + [[4, 4, 9, 1, 0, 2, 3]])
    net = model(max_len=max_len).eval()
    got = {}
    with torch.no_grad():
        net.reset_eval_state()
        for chunk in SessionParallelChunks(test, 3, steps_per_chunk=4, event_ids=True):
            for step, s, p in zip(session_steps(chunk), chunk["sessions"].split(chunk["ptr"].diff().tolist()),
                                  chunk["positions"].split(chunk["ptr"].diff().tolist()), strict=True):
                ranks = next_item_ranks(net.eval_scores(step), step["targets"])
                got |= {(int(a), int(b)): int(r) for a, b, r in zip(s, p, ranks, strict=True)}
        want = {}
        for s, items in enumerate(SESSIONS + [[4, 4, 9, 1, 0, 2, 3]]):
            for p in range(len(items) - 1):
                window = torch.tensor([items[max(0, p + 1 - max_len):p + 1]])
                scores = net.net(window)[0, -1] @ net.net.item_table.T
                want[(s, p)] = int((scores > scores[items[p + 1]]).sum()) + 1
    assert got == want
