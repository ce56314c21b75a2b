"""SimGCL and XSimGCL (Yu et al., SIGIR'22; TKDE'23) against hand-written references: InfoNCE (numpy loops), the
contrastive term of a step over the batch's distinct users and positives, the per-layer noise, layer 0 left out,
clean evaluation, the rows path, seeded determinism, config errors and a sweep over the new keys."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from recsys.builders import instantiate_group
from recsys.errors import ConfigError
from recsys.info import DatasetInfo
from recsys.losses import info_nce
from recsys.models.components.simgcl import SimGCLEncoder
from recsys.models.graph_module import GraphRecommender
from recsys.models.simgcl_module import SimGCL, XSimGCL
from recsys.validation import validate_config
from tests.unit.test_lightgcn import csr_from, dense_bipartite, dense_sym_norm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# 5 users, 4 items, every node has an edge (no row of zeros, so every noise row has norm ε)
PAIRS = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3), (3, 2), (3, 3), (4, 1), (4, 3)]
M, N, D = 5, 4, 4
# a BPR batch with repeated users (0, 2) and positives (1): 5 distinct users, 3 distinct positives
BATCH = {"users": torch.tensor([0, 2, 1, 0, 3, 4, 2]), "pos_items": torch.tensor([1, 0, 1, 1, 2, 3, 0]),
         "neg_items": torch.tensor([[2], [1], [0], [3], [1], [0], [2]])}
A_HAT = dense_sym_norm(dense_bipartite(PAIRS, M, N))


def dense_info_nce(view1: np.ndarray, view2: np.ndarray, tau: float) -> float:
    """``mean_i −log(exp(cos(a_i, b_i)/τ) / Σ_j exp(cos(a_i, b_j)/τ))``, written out with loops."""
    total = 0.0
    for i in range(len(view1)):
        logits = [float(view1[i] @ view2[j] / np.linalg.norm(view1[i]) / np.linalg.norm(view2[j]) / tau)
                  for j in range(len(view2))]
        total -= logits[i] - np.log(sum(np.exp(v) for v in logits))
    return total / len(view1)


def make(cls=SimGCL, seed: int = 0, **kwargs) -> SimGCL:
    torch.manual_seed(seed)
    settings = {"embedding_dim": D, "num_layers": 2, "eps": 0.1, "init": "normal", "reg_weight": 1e-2,
                "cl_weight": 0.5, "temperature": 0.2, **kwargs}
    return cls(DatasetInfo(M, N, csr_from(PAIRS, M, N)), encoder=SimGCLEncoder,
               optimizer=functools.partial(torch.optim.Adam, lr=1e-3), **settings).double()


def record(monkeypatch: pytest.MonkeyPatch, name: str) -> list:
    """Every output of ``SimGCLEncoder.<name>`` from now on (``propagate``'s as lists)."""
    seen, original = [], getattr(SimGCLEncoder, name)

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if name == "propagate":
            out = list(out)
            seen.append(out)
            return iter(out)
        seen.append((args, kwargs, out))
        return out

    monkeypatch.setattr(SimGCLEncoder, name, spy)
    return seen


def distinct(batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(batch["users"].numpy()), np.unique(batch["pos_items"].numpy())


# ---------------------------------------------------------------------------------------------- InfoNCE
def test_info_nce_equals_a_dense_reference_in_both_directions():
    g = torch.Generator().manual_seed(0)
    view1, view2 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    for a, b in ((view1, view2), (view2, view1)):
        assert info_nce(a, b, 0.2).item() == pytest.approx(dense_info_nce(a.numpy(), b.numpy(), 0.2), rel=1e-12)
    assert info_nce(view1, view2, 0.2).item() != pytest.approx(info_nce(view2, view1, 0.2).item())  # one direction
    # scale-free (cosine), and float32 input is computed in float32 at least
    assert info_nce(3 * view1, view2, 0.2).item() == pytest.approx(info_nce(view1, view2, 0.2).item(), rel=1e-12)
    assert info_nce(view1.half(), view2.half(), 0.2).dtype == torch.float32


def test_simgcl_step_contrasts_the_two_views_of_the_distinct_users_and_positives(monkeypatch):
    """The step's CL term equals the dense InfoNCE of the two perturbed views the encoder returned, over the 5
    distinct users and the 3 distinct positives (not the repeated rows, not the negatives); BPR and L2 are those of
    the clean pass (GraphRecommender's loss on the same batch)."""
    model = make(cl_weight=0.7)
    calls = record(monkeypatch, "forward")
    torch.manual_seed(5)
    loss, bpr, cl = model.batch_loss(BATCH)
    (clean, view1, view2) = calls
    assert not clean[1].get("perturbed") and view1[1]["perturbed"] and view2[1]["perturbed"]
    users, items = distinct(BATCH)
    assert view1[0][1].tolist() == view2[0][1].tolist() == [*users, *(items + M)]  # the rows of the views
    v1, v2 = view1[2].detach().numpy(), view2[2].detach().numpy()
    assert not np.allclose(v1, v2)  # independent noise
    want = dense_info_nce(v1[:5], v2[:5], 0.2) + dense_info_nce(v1[5:], v2[5:], 0.2)
    assert cl.item() == pytest.approx(want, rel=1e-10)
    base_loss, base_bpr = GraphRecommender.batch_loss(model, BATCH)  # clean pass, no noise drawn
    assert bpr.item() == pytest.approx(base_bpr.item(), rel=1e-12)
    assert loss.item() == pytest.approx(base_loss.item() + 0.7 * want, rel=1e-10)


def test_xsimgcl_step_contrasts_final_and_layer_l_star_of_one_perturbed_pass(monkeypatch):
    model = make(XSimGCL, cross_layer=1, cl_weight=0.3, temperature=0.15)
    passes = record(monkeypatch, "propagate")
    torch.manual_seed(5)
    loss, bpr, cl = model.batch_loss(BATCH)
    (layers,) = passes  # one pass
    layers = [t.detach().numpy() for t in layers]
    final = np.mean(layers[1:], 0)
    batch = {k: v.numpy() for k, v in BATCH.items()}
    nodes = np.unique(np.concatenate([batch["users"], batch["pos_items"] + M, batch["neg_items"][:, 0] + M]))
    users, items = (np.searchsorted(nodes, ids) for ids in (distinct(BATCH)[0], distinct(BATCH)[1] + M))
    want = (dense_info_nce(final[users], layers[1][users], 0.15)
            + dense_info_nce(final[items], layers[1][items], 0.15))
    assert cl.item() == pytest.approx(want, rel=1e-10)
    # BPR on the perturbed final embeddings of the same pass
    u, i, j = (final[np.searchsorted(nodes, ids)] for ids in (batch["users"], batch["pos_items"] + M,
                                                               batch["neg_items"][:, 0] + M))
    want_bpr = np.mean(np.log1p(np.exp((u * j).sum(1) - (u * i).sum(1))))
    assert bpr.item() == pytest.approx(want_bpr, rel=1e-10)
    ego = model.encoder.ego().detach().numpy()
    reg = sum((ego[ids] ** 2).sum() for ids in (batch["users"], batch["pos_items"] + M, batch["neg_items"][:, 0] + M))
    assert loss.item() == pytest.approx(want_bpr + 1e-2 * 0.5 * reg / 7 + 0.3 * want, rel=1e-10)


# ---------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("rows", [None, torch.tensor([1, 3, 6])])
def test_every_layer_of_a_perturbed_pass_gets_noise_of_norm_eps_in_the_orthant_of_its_embedding(monkeypatch, rows):
    model = make(num_layers=3, eps=0.3)
    perturbations = record(monkeypatch, "perturb")
    model.encoder(model.adjacency(), rows, perturbed=True)
    assert len(perturbations) == 3  # one per propagated layer, none for E⁽⁰⁾
    before = model.encoder.ego().detach().numpy()
    for k, ((x,), _, out) in enumerate(perturbations, start=1):
        x, noise = x.detach().numpy(), (out - x).detach().numpy()
        # cumulative: layer k propagates the perturbed layer k-1 (the last one at `rows` only)
        want = A_HAT @ before if k < 3 or rows is None else (A_HAT @ before)[rows.numpy()]
        np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-8)  # Â is stored in float32
        np.testing.assert_allclose(np.linalg.norm(noise, axis=1), 0.3, rtol=1e-12)
        assert (np.sign(noise) == np.sign(x)).all() and (noise != 0).all()
        before = out.detach().numpy()
    first, second = (p[2] - p[0][0] for p in perturbations[:2])
    assert not torch.allclose(first / first.norm(dim=1, keepdim=True), second / second.norm(dim=1, keepdim=True))


def test_without_noise_the_views_are_the_clean_pass_and_the_term_that_of_identical_views():
    model = make(eps=0.0, cl_weight=1.0)
    adj = model.adjacency()
    clean = model.encoder(adj)
    assert torch.equal(model.encoder(adj, perturbed=True), clean)
    users, items = distinct(BATCH)
    z = clean.detach().numpy()
    want = dense_info_nce(z[users], z[users], 0.2) + dense_info_nce(z[items + M], z[items + M], 0.2)
    _, _, cl = model.batch_loss(BATCH)
    assert cl.item() == pytest.approx(want, rel=1e-10)
    xsimgcl = make(XSimGCL, eps=0.0, num_layers=1)  # final = layer 1 = l*: identical views
    _, _, cross = xsimgcl.batch_loss(BATCH)
    z = xsimgcl.encoder(xsimgcl.adjacency()).detach().numpy()
    assert cross.item() == pytest.approx(dense_info_nce(z[users], z[users], 0.2)
                                         + dense_info_nce(z[items + M], z[items + M], 0.2), rel=1e-10)


@pytest.mark.parametrize("cls", [SimGCL, XSimGCL])
def test_ranking_uses_the_clean_mean_of_layers_one_to_l_without_the_ego_layer(cls):
    model = make(cls, num_layers=3)
    e0 = model.encoder.ego().detach().numpy()
    want = (A_HAT @ e0 + A_HAT @ A_HAT @ e0 + A_HAT @ A_HAT @ A_HAT @ e0) / 3
    for mode in (model.train, model.eval):
        mode()
        users, items = model()
        np.testing.assert_allclose(torch.cat([users, items]).detach().numpy(), want, rtol=1e-6, atol=1e-8)
    model.prepare_scoring()
    np.testing.assert_allclose(model.score_users(torch.arange(M)).numpy(), want[:M] @ want[M:].T, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", [SimGCL, XSimGCL])
def test_the_rows_path_equals_the_whole_graph_pass(cls):
    """Without noise (ε = 0: the draws of the two paths have other shapes) a step at the batch's rows gives the
    loss and gradients of the step over the whole graph."""
    model = make(cls, eps=0.0)
    results = []
    for fraction in (1.0, 0.0):  # rows only; everything
        model.full_pass_fraction = fraction
        model.zero_grad()
        values = model.batch_loss(BATCH)
        values[0].backward()
        results.append((torch.stack(values).detach(), model.encoder.embedding.weight.grad.clone()))
    (rows, rows_grad), (full, full_grad) = results
    torch.testing.assert_close(rows, full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rows_grad, full_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [SimGCL, XSimGCL])
def test_a_seed_fixes_the_noise(cls):
    model = make(cls)
    losses = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        losses.append(torch.stack(model.batch_loss(BATCH)).detach())
    assert torch.equal(losses[0], losses[1]) and not torch.allclose(losses[0], losses[2])
    first, again = make(cls, seed=3), make(cls, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True))


# ---------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(("cls", "settings", "needle"), [
    (SimGCL, {"num_layers": 0}, "model.num_layers=0: must be an integer > 0"),
    (SimGCL, {"eps": -0.1}, "model.eps=-0.1: must be a number >= 0"),
    (SimGCL, {"temperature": 0.0}, "model.temperature=0.0: must be a number > 0"),
    (SimGCL, {"cl_weight": -1.0}, "model.cl_weight=-1.0: must be a number >= 0"),
    (XSimGCL, {"cross_layer": 0}, "model.cross_layer=0: must be an integer > 0"),
    (XSimGCL, {"cross_layer": 3}, "model.cross_layer=3: must be an integer in 1..model.num_layers=2"),
])
def test_impossible_settings_name_the_key(cls, settings, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        make(cls, **settings)


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_built_from_the_config_an_impossible_layer_is_a_config_error():
    cfg = compose_train("model=xsimgcl", "model.cross_layer=3", "model.embedding_dim=4")
    with pytest.raises(ConfigError, match=r"model\.cross_layer=3: must be an integer in 1\.\.model\.num_layers=2"):
        instantiate_group(cfg.model, "model", info=DatasetInfo(M, N, csr_from(PAIRS, M, N)), _convert_="object")


def test_a_sweep_over_the_new_keys_reaches_encoder_and_module():
    """``train.py -m model=simgcl model.eps=0.05,0.1,0.2 model.cl_weight=0.1,0.5``: every job, expanded as the basic
    sweeper does, is a valid config whose model carries the job's ε (encoder) and λ (module)."""
    sweeps = OverridesParser.create().parse_overrides(["model.eps=0.05,0.1,0.2", "model.cl_weight=0.1,0.5"])
    jobs = list(itertools.product(*([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in sweeps)))
    assert len(jobs) == 6
    seen = set()
    for job in jobs:
        cfg = compose_train("model=simgcl", "model.embedding_dim=4", *job)
        validate_config(cfg, "train")
        model = instantiate(cfg.model, info=DatasetInfo(M, N, csr_from(PAIRS, M, N)), _convert_="object")
        seen.add((model.encoder.eps, model.cl_weight))
        assert model.hparams.eps == model.encoder.eps and model.hparams.cl_weight == model.cl_weight
    assert seen == set(itertools.product((0.05, 0.1, 0.2), (0.1, 0.5)))
