"""Each representation against an independent computation or a planted population, and the
few-shot property: an unseen user's shots move its predictions towards its side."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from personalign.users.representations import (
    BT,
    REPRESENTATIONS,
    FitSettings,
    Latent,
    LowRank,
    MeanDiff,
    UserTexts,
    make_model,
)

D = 8


def planted(n_users: int, pairs: int, bases: torch.Tensor, seed: int):
    """Users with simplex weights over `bases` ([D, K]); each pair's chosen side is the one the user's
    reward (features · bases · w_u) ranks higher (noise-free)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.distributions.Dirichlet(torch.full((bases.shape[1],), 0.3)).sample((n_users,))
    a, b = torch.randn(n_users, pairs, D, generator=g), torch.randn(n_users, pairs, D, generator=g)
    r = torch.einsum("upd,dk,uk->up", a - b, bases, w)
    chosen = torch.where((r > 0).unsqueeze(-1), a, b)
    rejected = torch.where((r > 0).unsqueeze(-1), b, a)
    return chosen, rejected, torch.ones(n_users, pairs, dtype=torch.bool), w


def accuracy(model, chosen, rejected, mask, shots: int) -> float:
    with torch.enable_grad():
        state = model.adapt(chosen[:, :shots], rejected[:, :shots], mask[:, :shots])
    margin = model.margin(state, chosen[:, shots:], rejected[:, shots:])
    return float((margin > 0).float().mean())


def test_mean_diff_is_the_mean_of_chosen_minus_rejected_in_numpy():
    rng = np.random.default_rng(0)
    c, r = rng.normal(size=(3, 4, D)).astype(np.float32), rng.normal(size=(3, 4, D)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    state = MeanDiff(D, 1).adapt(torch.from_numpy(c), torch.from_numpy(r), torch.from_numpy(mask)).numpy()
    expected = [(c[0] - r[0]).mean(0), (c[1, :2] - r[1, :2]).mean(0), np.zeros(D)]
    np.testing.assert_allclose(state, np.stack(expected), atol=1e-6)
    feats = rng.normal(size=(3, 5, D)).astype(np.float32)
    rewards = MeanDiff(D, 1).reward(torch.from_numpy(state), torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(rewards, np.einsum("ud,und->un", state, feats), atol=1e-5)


def test_lowrank_with_k_1_learns_the_bt_direction():
    w = torch.randn(D, 1, generator=torch.Generator().manual_seed(1))
    c, r, m, _ = planted(200, 6, w, seed=2)
    bt, lr = BT(D), LowRank(D, 1)
    bt.fit(c, r, m, FitSettings(max_steps=400, learning_rate=0.05))
    lr.fit(c, r, m, FitSettings(max_steps=400, learning_rate=0.5))
    cos = F.cosine_similarity(bt.w, lr.V[:, 0], dim=0)
    assert cos > 0.98, cos
    fc, fr, fm, _ = planted(100, 4, w, seed=3)
    state = lr.adapt(fc[:, :0], fr[:, :0], fm[:, :0])
    same = (bt.margin(None, fc, fr) > 0) == (lr.margin(state, fc, fr) > 0)
    assert same.float().mean() > 0.95  # the two fits differ in regularization: near-zero margins may flip


def test_lowrank_recovers_a_planted_low_rank_population():
    q = torch.linalg.qr(torch.randn(D, 2, generator=torch.Generator().manual_seed(4)))[0]
    bases = torch.stack([q[:, 0], -q[:, 0] + 0.5 * q[:, 1]], dim=1) * 3  # users on either side of one axis
    c, r, m, _ = planted(300, 10, bases, seed=5)
    model = LowRank(D, 2)
    model.fit(c, r, m, FitSettings(max_steps=800, learning_rate=0.1))
    # the learned basis spans the planted one: the projection of each planted basis onto span(V) keeps its norm
    q = torch.linalg.qr(model.V.detach())[0]
    kept = (q.T @ bases).norm(dim=0) / bases.norm(dim=0)
    assert (kept > 0.95).all(), kept
    uc, ur, um, _ = planted(100, 12, bases, seed=6)
    bt = BT(D)
    bt.fit(c, r, m, FitSettings(max_steps=400, learning_rate=0.05))
    assert accuracy(model, uc, ur, um, 8) > accuracy(bt, uc, ur, um, 8) + 0.15


def test_vpl_elbo_on_a_case_computed_by_hand():
    model = Latent(2, 2)
    with torch.no_grad():
        model.P.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        model.Q.copy_(torch.eye(2))
        model.L.zero_()
        model.log_var0.copy_(torch.tensor([math.log(0.25), 0.0]))
        model.w0.copy_(torch.tensor([0.5, -1.0]))
        model.scale.fill_(2.0)
    ctx_c, ctx_r = torch.tensor([[[3.0, 4.0]]]), torch.zeros(1, 1, 2)  # one context pair: n = (0.6, 0.8)
    tgt_c, tgt_r = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 2.0]])
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(0))
    bt, kl = model.elbo_loss((ctx_c, ctx_r, torch.ones(1, 1, dtype=torch.bool)), (tgt_c, tgt_r), g)
    mu = np.array([0.6, 1.6])
    var = np.array([0.25, 1.0])
    z = mu + np.sqrt(var) * eps.numpy()[0]
    diff = np.array([1.0, -1.0])
    margin = diff @ np.array([0.5, -1.0]) + 2.0 * diff @ z
    assert float(bt) == pytest.approx(math.log1p(math.exp(-margin)), rel=1e-5)
    assert float(kl) == pytest.approx(0.5 * float(np.sum(mu ** 2 + var - 1 - np.log(var))), rel=1e-5)


@pytest.mark.parametrize("name", [n for n in REPRESENTATIONS if n != "bt"])
def test_an_unseen_users_shots_move_its_predictions_towards_its_side(name):
    """Two unseen users give opposite shots on the same pairs; the same test pair is then ranked their way."""
    bases = torch.linalg.qr(torch.randn(D, 2, generator=torch.Generator().manual_seed(7)))[0] * 3
    c, r, m, _ = planted(200, 8, bases, seed=8)
    model = make_model(name, D, 2 if name != "latent" else None)
    model.fit(c, r, m, FitSettings(max_steps=300))
    v = bases[:, 0]
    g = torch.Generator().manual_seed(9)
    a = torch.randn(4, D, generator=g)
    shots_c, shots_r = a + v, a - v  # pairs where the +v side was chosen
    test_c, test_r = torch.randn(D, generator=g) + v, torch.randn(D, generator=g) - v
    chosen = torch.stack([shots_c, shots_r])  # user 0 prefers +v, user 1 prefers -v
    rejected = torch.stack([shots_r, shots_c])
    with torch.enable_grad():
        state = model.adapt(chosen, rejected, torch.ones(2, 4, dtype=torch.bool))
    margin = model.margin(state, torch.stack([test_c, test_c]).unsqueeze(1), torch.stack([test_r, test_r]).unsqueeze(1))
    assert margin[0, 0] > 0 > margin[1, 0], margin


def test_bt_is_the_same_for_every_user():
    model = BT(D)
    with torch.no_grad():
        model.w.copy_(torch.arange(D, dtype=torch.float32))
    f = torch.randn(2, 3, D)
    state = model.adapt(torch.randn(2, 4, D), torch.randn(2, 4, D), torch.ones(2, 4, dtype=torch.bool))
    np.testing.assert_allclose(model.reward(state, f).detach().numpy(), (f @ model.w).detach().numpy(), atol=1e-6)


def test_each_reward_formula_matches_numpy():
    """r_u of lowrank, mixture (PAL-A and PAL-B), embedding and latent against their formulas written in numpy."""
    rng = np.random.default_rng(3)
    f = rng.normal(size=(2, 3, D)).astype(np.float32)
    softmax = lambda w: np.exp(w) / np.exp(w).sum(-1, keepdims=True)  # noqa: E731
    normalize = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    state = rng.normal(size=(2, 4)).astype(np.float32)
    lowrank = make_model("lowrank", D, 4)
    V = lowrank.V.detach().numpy()
    expected = np.einsum("und,dk,uk->un", f, V, softmax(state)) / 100
    np.testing.assert_allclose(lowrank.reward(torch.from_numpy(state), torch.from_numpy(f)).detach(), expected, rtol=1e-4, atol=1e-5)
    for variant in ("a", "b"):
        mix = make_model("mixture", D, 4)
        mix.variant = variant
        A, P, s = mix.A.detach().numpy(), mix.P.detach().numpy(), min(np.exp(float(mix.logit_scale)), 100.0)
        u = softmax(state) @ P
        proj = f @ A
        expected = (s * np.einsum("unp,up->un", normalize(proj), normalize(u)) if variant == "b"
                    else -np.linalg.norm(proj - u[:, None], axis=-1))
        np.testing.assert_allclose(mix.reward(torch.from_numpy(state), torch.from_numpy(f)).detach(), expected, rtol=1e-4, atol=1e-4)
    emb = make_model("embedding", D, 4)
    with torch.no_grad():
        emb.w0.normal_()
        emb.e0.normal_()
    w0, U, e0 = (t.detach().numpy() for t in (emb.w0, emb.U, emb.e0))
    expected = f @ w0 + np.einsum("und,dk,uk->un", f, U, e0 + state)
    np.testing.assert_allclose(emb.reward(torch.from_numpy(state), torch.from_numpy(f)).detach(), expected, rtol=1e-4, atol=1e-4)
    lat = make_model("latent", D)
    with torch.no_grad():
        lat.Q.normal_()
        lat.w0.normal_()
    z = rng.normal(size=(2, D)).astype(np.float32)
    expected = f @ lat.w0.detach().numpy() + float(lat.scale) * np.einsum("und,dk,uk->un", f, lat.Q.detach().numpy(), z)
    np.testing.assert_allclose(lat.reward(torch.from_numpy(z), torch.from_numpy(f)).detach(), expected, rtol=1e-4, atol=1e-4)


def test_latent_reads_a_users_own_texts_through_the_ridge_maps():
    """With context 'all', a user's comments move z by t·C·(mean comment − population mean); with 'pairs' they do not."""
    g = torch.Generator().manual_seed(11)
    c, r, m = torch.randn(50, 3, D, generator=g), torch.randn(50, 3, D, generator=g), torch.ones(50, 3, dtype=torch.bool)
    texts = UserTexts(torch.randn(50, 2, D, generator=g), torch.tensor([[0, 1]] * 50), torch.ones(50, 2, dtype=torch.bool))
    for context in ("all", "pairs"):
        model = Latent(D, context=context)
        model.fit(c, r, m, FitSettings(max_steps=5), texts)
        with_texts = model.adapt(c[:2, :0], r[:2, :0], m[:2, :0], texts.select(torch.arange(2)))
        if context == "pairs":
            assert torch.count_nonzero(with_texts) == 0
            continue
        means = texts.features[:2]  # one text of each kind per user
        expected = float(model.text_weight) * torch.einsum("ujd,jdk->uk", means - model.text_mean, model.C)
        torch.testing.assert_close(with_texts, expected.detach(), rtol=1e-4, atol=1e-5)
