"""User representations (docs/user-models.md): a reward r_u(x, y) = f(φ(x, y), s_u) per user, where s_u is a
small state fitted from the user's pairs while the shared part stays frozen.

Every representation has the same three operations, batched over users:

* `fit(chosen, rejected, mask, settings)`: learn the shared part on seen users' pairs ([U, P, d], mask [U, P]);
* `adapt(chosen, rejected, mask)`: the state s_u of each user from its shots ([U, k, d]; k = 0 gives the
  population state);
* `reward(state, features)`: r_u of responses ([U, S], [U, n, d] -> [U, n]).

Deliberate differences from each method's public code are listed in docs/fidelity.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from personalign.config import StrictModel
from personalign.users.names import REPRESENTATIONS

TEXT_KINDS = ("comment", "demographic")  # a user's own texts besides pairs, by kind id


@dataclass
class UserTexts:
    """Features of users' own texts besides their pairs (comments, demographic): [U, T, d], their kind
    ids (`TEXT_KINDS`) [U, T] and mask [U, T]."""

    features: Tensor
    kinds: Tensor
    mask: Tensor

    def select(self, idx: Tensor) -> UserTexts:
        return UserTexts(self.features[idx], self.kinds[idx], self.mask[idx])

    def kind_means(self) -> Tensor:
        """[U, n_kinds, d]: each user's mean text feature of each kind (zero where it has none)."""
        out = []
        for j in range(len(TEXT_KINDS)):
            out.append(masked_mean(self.features, self.mask & (self.kinds == j)))
        return torch.stack(out, dim=1)

    def kind_present(self) -> Tensor:
        """[U, n_kinds] bool: the user has a text of that kind."""
        return torch.stack([(self.mask & (self.kinds == j)).any(1) for j in range(len(TEXT_KINDS))], dim=1)


class FitSettings(StrictModel):
    """How the shared part is learned (TRL's names where they exist)."""

    learning_rate: float | None = None  # None: the representation's own default
    max_steps: int | None = None
    per_device_train_batch_size: int = 256  # users per step (latent)
    weight_decay: float = 0.0
    adapt_steps: int = 300  # few-shot fit of a user's state (lowrank, mixture, embedding)
    adapt_learning_rate: float = 0.1
    seed: int = 0


def bt_loss(margin: Tensor, mask: Tensor | None = None) -> Tensor:
    """Bradley–Terry: mean −log σ(r(y_w) − r(y_l)) over the (masked) pairs."""
    loss = -F.logsigmoid(margin)
    if mask is None:
        return loss.mean()
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of [U, k, ...] where mask [U, k]; zero for a user with no entries."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def _adam_fit(params: list[Tensor], loss_fn, steps: int, lr: float) -> None:
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()


class UserModel(nn.Module):
    """Base class: a representation's shared parameters, its state size and its three operations."""

    name: ClassVar[str]
    default_lr: ClassVar[float] = 1e-2
    default_steps: ClassVar[int] = 500

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.dim, self.k = dim, k

    @property
    def state_dim(self) -> int:
        return 0

    def adapt(self, chosen: Tensor, rejected: Tensor, mask: Tensor, texts: UserTexts | None = None) -> Tensor:
        return chosen.new_zeros(chosen.shape[0], self.state_dim)

    def reward(self, state: Tensor, features: Tensor) -> Tensor:
        raise NotImplementedError

    def margin(self, state: Tensor, chosen: Tensor, rejected: Tensor) -> Tensor:
        return self.reward(state, chosen) - self.reward(state, rejected)

    def fit(self, chosen: Tensor, rejected: Tensor, mask: Tensor, settings: FitSettings,
            texts: UserTexts | None = None) -> dict[str, float]:
        return {}

    def _steps_lr(self, settings: FitSettings) -> tuple[int, float]:
        return settings.max_steps or self.default_steps, settings.learning_rate or self.default_lr


class BT(UserModel):
    """`bt`, one reward for everyone (Bradley & Terry 1952): r(x, y) = w·φ(x, y), w fitted by the BT
    likelihood with an L2 penalty `weight_decay`·‖w‖² on every pair of every user."""

    name = "bt"

    def __init__(self, dim: int, k: int = 1):
        super().__init__(dim, k)
        self.w = nn.Parameter(torch.zeros(dim))

    def reward(self, state: Tensor, features: Tensor) -> Tensor:
        return features @ self.w

    def fit(self, chosen, rejected, mask, settings, texts=None):
        steps, lr = self._steps_lr(settings)
        diff = chosen - rejected
        _adam_fit([self.w], lambda: bt_loss(diff @ self.w, mask) + settings.weight_decay * self.w.pow(2).sum(),
                  steps, lr)
        return {"loss": float(bt_loss(diff @ self.w.detach(), mask))}


class MeanDiff(UserModel):
    """`mean-diff`, no training: w_u = mean over the user's shots of φ(y_w) − φ(y_l), r_u = w_u·φ.
    With no shots w_u = 0 and every pair ties."""

    name = "mean-diff"

    @property
    def state_dim(self) -> int:
        return self.dim

    def adapt(self, chosen, rejected, mask, texts=None):
        return masked_mean(chosen - rejected, mask)

    def reward(self, state, features):
        return torch.einsum("ud,und->un", state, features)


class _PerUserFit(UserModel):
    """Representations whose state is a per-user parameter fitted by gradient with the shared part
    frozen (LoRe's `PersonalizeBatch`); jointly learned with the shared part on seen users."""

    def init_state(self, n: int) -> Tensor:
        return torch.zeros(n, self.state_dim)

    def state_penalty(self, state: Tensor) -> Tensor:
        return state.new_zeros(())

    adapt_steps: int = 300
    adapt_lr: float = 0.1

    def adapt(self, chosen, rejected, mask, texts=None):
        steps, lr = self.adapt_steps, self.adapt_lr
        state = self.init_state(chosen.shape[0]).to(chosen)
        if mask.sum() == 0:
            return state
        state.requires_grad_(True)
        frozen = [p.requires_grad for p in self.parameters()]
        for p in self.parameters():
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                _adam_fit([state], lambda: bt_loss(self.margin(state, chosen, rejected), mask)
                          + self.state_penalty(state), steps, lr)
        finally:
            for p, f in zip(self.parameters(), frozen):
                p.requires_grad_(f)
        return state.detach()

    def fit(self, chosen, rejected, mask, settings, texts=None):
        steps, lr = self._steps_lr(settings)
        self.adapt_steps, self.adapt_lr = settings.adapt_steps, settings.adapt_learning_rate
        g = torch.Generator().manual_seed(settings.seed)  # a fit depends on its seed alone, not on the global RNG
        states = nn.Parameter(self.init_state(chosen.shape[0]).normal_(0.0, 0.01, generator=g))
        params = [*self.parameters(), states]
        def loss() -> torch.Tensor:
            return (bt_loss(self.margin(states, chosen, rejected), mask) + self.state_penalty(states)
                    + self.shared_penalty(settings))

        _adam_fit(params, loss, steps, lr)
        return {"loss": float(bt_loss(self.margin(states, chosen, rejected), mask).detach())}

    def shared_penalty(self, settings: FitSettings) -> Tensor:
        return settings.weight_decay * sum(p.pow(2).sum() for p in self.parameters())


class LowRank(_PerUserFit):
    """`lowrank`, LoRe (Bose et al. 2025; facebookresearch/LoRe `LoRe`, `PersonalizeBatch`):
    r_u(x, y) = φ(x, y)·V·softmax(w_u) / 100, a shared basis V ∈ R^{d×K} and user weights on the
    simplex; V and every seen user's w_u learned jointly by the BT likelihood (Adam), then for a new
    user V is frozen and w_u fitted from its shots. K = 1 is `bt`."""

    name = "lowrank"
    default_lr = 0.5  # LoRe's joint learning rate
    default_steps = 1000

    def __init__(self, dim: int, k: int = 16):
        super().__init__(dim, k)
        self.V = nn.Parameter(torch.randn(dim, k, generator=torch.Generator().manual_seed(0)))

    @property
    def state_dim(self) -> int:
        return self.k

    def weights(self, state: Tensor) -> Tensor:
        return F.softmax(state, dim=-1)

    def reward(self, state, features):
        return torch.einsum("und,dk,uk->un", features, self.V, self.weights(state)) / 100.0


class Mixture(_PerUserFit):
    """`mixture`, PAL (Chen et al., ICLR 2025; RamyaLab/pluralistic-alignment `pal_rm_b`, `pal_rm_a`):
    a shared projection f(φ) = Aφ ∈ R^p and K prototypes P_k ∈ R^p; a user's ideal point is
    u = Σ_k softmax(w_u)_k P_k. PAL-B (`variant='b'`, the "angle" learner):
    r_u = s·cos(f(φ), u) with s = exp(logit_scale) ≤ 100; PAL-A (`variant='a'`, "dist"):
    r_u = −‖f(φ) − u‖."""

    name = "mixture"
    default_lr = 1e-2
    default_steps = 1000

    def __init__(self, dim: int, k: int = 8, width: int = 64, variant: Literal["a", "b"] = "b"):
        super().__init__(dim, k)
        g = torch.Generator().manual_seed(0)
        self.variant = variant
        self.A = nn.Parameter(torch.randn(dim, width, generator=g) / math.sqrt(dim))
        self.P = nn.Parameter(torch.randn(k, width, generator=g))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def state_dim(self) -> int:
        return self.k

    def reward(self, state, features):
        f = features @ self.A
        u = F.softmax(state, dim=-1) @ self.P
        if self.variant == "a":
            return -torch.linalg.vector_norm(f - u.unsqueeze(1), dim=-1)
        scale = self.logit_scale.exp().clamp(max=100.0)
        return scale * torch.einsum("unp,up->un", F.normalize(f, dim=-1), F.normalize(u, dim=-1))


class Embedding(_PerUserFit):
    """`embedding`, P-RLHF (Li et al. 2024): a user model of a generic embedding e_0 shared by every
    user plus an individual embedding e_u of each seen user (zero for an unseen one), combined with
    φ by r_u = φ·w_0 + (φ U)·(e_0 + e_u), U ∈ R^{d×K}; e_u carries an L2 penalty `user_l2`. A new
    user's e_u is fitted from its shots with everything else frozen."""

    name = "embedding"
    default_lr = 1e-2
    default_steps = 1000
    user_l2 = 1e-3

    def __init__(self, dim: int, k: int = 16):
        super().__init__(dim, k)
        g = torch.Generator().manual_seed(0)
        self.w0 = nn.Parameter(torch.zeros(dim))
        self.U = nn.Parameter(torch.randn(dim, k, generator=g) / math.sqrt(dim))
        self.e0 = nn.Parameter(torch.zeros(k))

    @property
    def state_dim(self) -> int:
        return self.k

    def state_penalty(self, state):
        return self.user_l2 * state.pow(2).sum(-1).mean()

    def reward(self, state, features):
        return features @ self.w0 + torch.einsum("und,dk,uk->un", features, self.U, self.e0 + state)


class Latent(UserModel):
    """`latent`, VPL (Poddar et al., NeurIPS 2024; WEIRDLabUW/vpl_llm `VAEModel`): an encoder
    q(z | C) = N(μ, diag σ²) over the user's context C, a reward r(y, z) = φ·w_0 + s·(Q φ)·z, trained
    on seen users by the ELBO E_q[−log σ(r(y_w, z) − r(y_l, z))] + β·KL(q ‖ N(0, I)) on episodes (a
    random context of 0..n−1 of a user's pairs, the target another of its pairs).

    The context is the user's pairs, μ = mean_i P·n_i with n_i = normalize(φ(y_w,i) − φ(y_l,i)), and
    with `context='all'` also the user's own texts: μ += t·Σ_kind C_kind·(mean φ of its texts of that
    kind − the population's mean), for comments and the demographic text (`TEXT_KINDS`), C fitted by
    ridge regression on the seen users before the ELBO training (`fit_text_maps`), the weight t learned
    with the rest; log σ² = L·μ + b. P and Q start at the identity (training starts from normalised
    mean-diff) with an L2 penalty `anchor` towards it. A new user's z is μ of its context (0 with none)."""

    name = "latent"
    default_lr = 1e-3
    default_steps = 1500
    beta = 1e-4
    anchor = 1e-2
    ridge = 0.1

    def __init__(self, dim: int, k: int | None = None, context: Literal["pairs", "all"] = "all"):
        k = k or dim
        super().__init__(dim, k)
        self.context = context
        eye = torch.eye(dim, k)
        self.P = nn.Parameter(eye.clone())
        self.Q = nn.Parameter(eye.clone())
        self.register_buffer("C", torch.zeros(len(TEXT_KINDS), dim, k))
        self.register_buffer("text_mean", torch.zeros(len(TEXT_KINDS), dim))
        self.text_weight = nn.Parameter(torch.tensor(1.0))
        self.L = nn.Parameter(torch.zeros(k, k))
        self.log_var0 = nn.Parameter(torch.full((k,), -4.0))
        self.w0 = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.tensor(10.0))

    @property
    def state_dim(self) -> int:
        return self.k

    def encode(self, chosen: Tensor, rejected: Tensor, mask: Tensor, texts: UserTexts | None = None
               ) -> tuple[Tensor, Tensor]:
        """μ, log σ² of q(z | C): [U, K] each."""
        mu = masked_mean(F.normalize(chosen - rejected, dim=-1) @ self.P, mask)
        if self.context == "all" and texts is not None:
            centred = (texts.kind_means() - self.text_mean) * texts.kind_present().unsqueeze(-1)
            mu = mu + self.text_weight * torch.einsum("ujd,jdk->uk", centred, self.C)
        return mu, mu @ self.L + self.log_var0

    def adapt(self, chosen, rejected, mask, texts=None):
        return self.encode(chosen, rejected, mask, texts)[0]

    def reward(self, state, features):
        return features @ self.w0 + self.scale * torch.einsum("unk,uk->un", features @ self.Q, state)

    def elbo_loss(self, context: tuple, target: tuple[Tensor, Tensor],
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(BT term with z sampled by the reparameterisation, KL(q ‖ N(0, I)) summed over dims, mean over users);
        `context` is (chosen, rejected, mask[, texts])."""
        mu, log_var = self.encode(*context)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * log_var) * eps
        bt = bt_loss(self.margin(z, target[0].unsqueeze(1), target[1].unsqueeze(1)).squeeze(1))
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1).mean()
        return bt, kl

    def fit_text_maps(self, chosen: Tensor, rejected: Tensor, mask: Tensor, texts: UserTexts) -> None:
        """C by ridge regression of each seen user's mean P·n_i (over all its pairs) on the centred mean
        features of its texts of each kind (concatenated); λ = `ridge`·trace(XᵀX)/columns."""
        present = texts.kind_present().unsqueeze(-1).float()
        self.text_mean.copy_((texts.kind_means() * present).sum(0) / present.sum(0).clamp_min(1.0))
        x = ((texts.kind_means() - self.text_mean) * present).flatten(1).double()  # [U, kinds·d]
        y = masked_mean(F.normalize(chosen - rejected, dim=-1) @ self.P.detach(), mask).double()
        lam = self.ridge * float((x * x).sum()) / x.shape[1]
        gram = x.T @ x + max(lam, 1e-6) * torch.eye(x.shape[1], dtype=x.dtype)
        self.C.copy_(torch.linalg.solve(gram, x.T @ y).float().view(len(TEXT_KINDS), self.dim, self.k))

    def fit(self, chosen, rejected, mask, settings, texts=None):
        steps, lr = self._steps_lr(settings)
        g = torch.Generator().manual_seed(settings.seed)
        if texts is not None and self.context == "all":
            self.fit_text_maps(chosen, rejected, mask, texts)
        eye = torch.eye(self.dim, self.k)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        counts = mask.sum(1)
        usable = torch.nonzero(counts >= 2).squeeze(1)
        if usable.numel() == 0:
            raise ValueError("latent needs users with at least 2 pairs to train")
        bt = kl = torch.zeros(())
        for _ in range(steps):
            pick = usable[torch.randint(0, usable.numel(), (settings.per_device_train_batch_size,), generator=g)]
            c, r, m, n = chosen[pick], rejected[pick], mask[pick], counts[pick]
            order = torch.argsort(torch.rand(m.shape, generator=g) - m.float() * 2, dim=1)  # valid pairs first
            c = torch.gather(c, 1, order.unsqueeze(-1).expand_as(c))
            r = torch.gather(r, 1, order.unsqueeze(-1).expand_as(r))
            k = (torch.rand(n.shape, generator=g) * n).long()  # context size 0..n-1; pair k is the target
            ctx_mask = torch.arange(m.shape[1]).unsqueeze(0) < k.unsqueeze(1)
            rows = torch.arange(c.shape[0])
            ctx = (c, r, ctx_mask, texts.select(pick) if texts is not None else None)
            bt, kl = self.elbo_loss(ctx, (c[rows, k], r[rows, k]), g)
            anchor = self.anchor * ((self.P - eye).pow(2).sum() + (self.Q - eye).pow(2).sum())
            loss = bt + self.beta * kl + anchor + settings.weight_decay * self.w0.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {"loss": float(bt.detach()), "kl": float(kl.detach()), "text_weight": float(self.text_weight.detach())}


MODELS: dict[str, type[UserModel]] = {
    "bt": BT, "mean-diff": MeanDiff, "lowrank": LowRank, "mixture": Mixture, "embedding": Embedding, "latent": Latent,
}
DEFAULT_K = {"bt": 1, "mean-diff": 0, "lowrank": 16, "mixture": 8, "embedding": 16, "latent": None}


def make_model(name: str, dim: int, k: int | None = None, context: str = "all", variant: str = "b") -> UserModel:
    """A fresh representation `name` for features of dimension `dim` (K from `DEFAULT_K` unless given);
    `context` is `latent`'s ('pairs' or 'all': pairs and the user's own texts), `variant` `mixture`'s
    ('b': PAL-B, 'a': PAL-A)."""
    if name not in MODELS:
        raise ValueError(f"unknown representation {name!r}; choose one of {', '.join(REPRESENTATIONS)}")
    k = DEFAULT_K[name] if k is None else k
    if name == "latent":
        return Latent(dim, k, context=context)
    if name == "mixture":
        return Mixture(dim, k, variant=variant)
    return MODELS[name](dim, k) if name not in ("bt", "mean-diff") else MODELS[name](dim, k or 1)
