"""pFL-ResFIM: personalised FL with Residual Fisher Information (Zhu, Li, Wang, Lam; ISBI 2026;
arXiv 2603.14848), as the documented interpretation of ALGORITHMS.md 5.2.

The paper's code is not public; this is the implementable reading of its abstract (5.1),
not a reproduction. Personalisation is per parameter: each site k keeps the parameters
most sensitive to domain style (a mask m_k) and shares the rest.

1. *Style bank* (once, round 1, ``query.style``): every site uploads ``bank_size``
   low-frequency amplitude windows of its training patches (3D FFT, centred window of
   half-width floor(min side * r), :mod:`engine.training.fourier`): amplitude only, no
   phase, so no anatomy. The server sends each site the others' banks whenever masks are
   due (rounds 1, 1 + R, 1 + 2R, ... with R = ``mask_every``).
2. *Spectral transfer*: x_{k->j} is x with its window amplitude replaced by one of site
   j's (drawn per image), its phase kept; the label of x is reused.
3. *Diagonal empirical Fisher* of the site's model after local training,
   F(D)_i = mean over ``fisher_batches`` minibatches of (d loss / d theta_i)^2, with the
   run's segmentation loss, on D_k and on every D_{k->j}.
4. *Residual FIM*: ResFIM_i = | F(D_k)_i - (1/(K-1)) sum_{j != k} F(D_{k->j})_i |.
5. *Mask*: m_{k,i} = 1 (sensitive, kept) for the top fraction ``rho`` of ResFIM within
   each tensor; normalisation layers are wholly sensitive (``norm_local``, FedBN-like).
6. *Upload*: the mask as bits and the shared entries theta_{k,i}, m_{k,i} = 0, only.
7. *Server*: theta_bar_i = sum_k (1 - m_{k,i}) p_k theta_{k,i} / sum_k (1 - m_{k,i}) p_k,
   p_k = n_k / n; an entry no site shares keeps its previous value.
8. *Personal model*: theta_k <- m_k * theta_k + (1 - m_k) * theta_bar; local training
   starts from it, validation and test use it.

Choices [I]:

- *Same patches for every domain*: D_k and each D_{k->j} are the same minibatches (only
  the style differs), so the residual measures the style change and not patch sampling.
- *Full swap*: the transferred window is site j's amplitude itself (lambda = 1, no
  interpolation with the site's own), the clearest "other domain" signal.
- *Minibatch Fisher*: squared gradients of minibatch losses (one backward each, not per
  sample), in eval mode so that no norm statistics move.
- *When*: the mask is computed after local training, from the model being uploaded, so
  round 1 already aggregates with masks; between recomputations a site reuses its mask.
  A site that never got a bank (or is alone, or rho = 0) keeps norm layers only.
- *Per tensor*: "layer" is a state-dict tensor (weight and bias apart); top-rho keeps
  floor(rho * n) entries (ties broken by ``torch.topk``), so a tiny tensor may keep none;
  the per-layer normalisation of 5.2.3 cannot change a per-tensor ranking and is skipped.
- *Buffers* (no gradient) are shared unless they belong to a norm layer; integer tensors
  never leave the site.
- *Shared model*: theta_bar, with entries no site ever shared left at their initial
  value; it is what ``global_model.safetensors`` offers an unseen site.
- *Local model* (the K x K matrix): the site's whole model after local training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from engine.errors import ConfigError, FederationError
from engine.fl.aggregate import normalise
from engine.fl.base import RoundOutcome, Strategy
from engine.fl.fedbn import norm_state_names
from engine.fl.personal import PersonalisedSite
from engine.fl.protocol import TRAIN, ArrayDict, Exchange, Message, Reply
from engine.fl.registry import register
from engine.fl.site import SiteRuntime
from engine.training.fourier import low_amplitude, normalise_amplitude

log = logging.getLogger(__name__)

STYLE = "query.style"
STYLES = "styles"  # train-message group: the other sites' banks, by site index
SHARED, MASK = "shared", "mask"  # train-reply groups: shared entries, packed mask bits
KEPT = "personal"  # site-store key: the site's model and mask
STYLE_PHASE, FISHER_PHASE = 3, 4  # SiteRuntime.rng phases (0: training patches)

Batch = tuple[torch.Tensor, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ResFIMParams:
    """Values from the ranges ALGORITHMS.md 5.2 suggests (no published defaults)."""

    rho: float = 0.1  # fraction of each tensor kept local (5.2.4: 0.05, 0.1, 0.2)
    mask_every: int = 5  # R: rounds between mask recomputations (5.2.7: 5-10)
    fisher_batches: int = 8  # minibatches per Fisher estimate (5.2.2: 8-32)
    r: float = 0.1  # amplitude-window ratio of the style bank (5.2.1: 0.01-0.1)
    bank_size: int = 4  # amplitude windows each site shares
    norm_local: bool = True  # normalisation layers always kept local

    def __post_init__(self) -> None:
        if not 0.0 <= self.rho < 1.0:
            raise ConfigError(f"strategy.params.rho: must be in [0, 1) (fraction kept local), got {self.rho}")
        if self.mask_every < 1:
            raise ConfigError(f"strategy.params.mask_every: must be >= 1, got {self.mask_every}")
        if self.fisher_batches < 1:
            raise ConfigError(f"strategy.params.fisher_batches: must be >= 1, got {self.fisher_batches}")
        if not 0.0 <= self.r <= 0.5:
            raise ConfigError(f"strategy.params.r: must be in [0, 0.5] (of the shortest patch side), got {self.r}")
        if self.bank_size < 1:
            raise ConfigError(f"strategy.params.bank_size: must be >= 1, got {self.bank_size}")


# -- the pieces -------------------------------------------------------------------------------
def transfer_style(images: torch.Tensor, amplitudes: torch.Tensor, r: float) -> torch.Tensor:
    """Image i of a (B, C, X, Y, Z) batch with its low-frequency amplitude window replaced
    by ``amplitudes[i]`` (C, w, w, w), its phase kept."""
    return torch.cat([normalise_amplitude(images[i : i + 1], amplitudes[i], r) for i in range(len(images))])


def diagonal_fisher(network: nn.Module, loss_fn: Loss, batches: Sequence[Batch], device: torch.device) -> ArrayDict:
    """Mean over ``batches`` of the squared gradient of each trainable parameter (eval mode)."""
    network.eval()
    params = {n: p for n, p in network.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    for images, labels in batches:
        network.zero_grad(set_to_none=True)
        loss_fn(network(images.to(device)), labels.to(device)).backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    network.zero_grad(set_to_none=True)
    return {n: (f / len(batches)).cpu() for n, f in fisher.items()}


def residual_fisher(own: ArrayDict, transferred: Sequence[ArrayDict]) -> ArrayDict:
    """| F(D_k) - mean_j F(D_{k->j}) | per parameter."""
    return {n: (f - torch.stack([t[n] for t in transferred]).mean(dim=0)).abs() for n, f in own.items()}


def top_fraction(scores: torch.Tensor, rho: float) -> torch.Tensor:
    """Boolean mask of the floor(rho * n) largest entries of ``scores``."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    count = math.floor(rho * scores.numel() + 1e-9)
    if count > 0:
        mask[torch.topk(scores.flatten(), count).indices] = True
    return mask.reshape(scores.shape)


def pack(state: ArrayDict, mask: Mapping[str, torch.Tensor]) -> dict[str, ArrayDict]:
    """What a site uploads: the shared entries (1-D) and the mask as packed bits (uint8)."""
    shared = {n: state[n][~m].contiguous() for n, m in mask.items()}
    bits = {n: torch.from_numpy(np.packbits(m.flatten().numpy())) for n, m in mask.items()}
    return {SHARED: shared, MASK: bits}


def unpack_mask(bits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The boolean mask of ``shape`` packed by :func:`pack`."""
    flat = np.unpackbits(bits.numpy().astype(np.uint8), count=math.prod(shape)).astype(bool)
    return torch.from_numpy(flat).reshape(tuple(shape))


def masked_average(
    uploads: Mapping[int, tuple[ArrayDict, Mapping[str, torch.Tensor]]],
    weights: Mapping[int, float],
    previous: ArrayDict,
) -> ArrayDict:
    """theta_bar_i = sum_k (1 - m_ki) p_k theta_ki / sum_k (1 - m_ki) p_k; ``previous`` where
    no site shares i (and for integer tensors)."""
    out: ArrayDict = {}
    for name, prev in previous.items():
        if not torch.is_floating_point(prev):
            out[name] = prev.clone()
            continue
        total = torch.zeros(prev.shape, dtype=torch.float64)
        weight = torch.zeros(prev.shape, dtype=torch.float64)
        for k, (shared, mask) in uploads.items():
            keep = ~mask[name]
            total[keep] += float(weights[k]) * shared[name].to(torch.float64)
            weight[keep] += float(weights[k])
        out[name] = torch.where(weight > 0, total / weight.clamp_min(1e-300), prev.to(torch.float64)).to(prev.dtype)
    return out


# -- site ---------------------------------------------------------------------------------------
class ResFIMSite(PersonalisedSite):
    """Keeps its model and mask; uploads the shared entries and the mask."""

    def __init__(self, params: ResFIMParams, runtime: SiteRuntime) -> None:
        super().__init__(params, runtime)
        self.norm_names = set(norm_state_names(runtime.network)) if params.norm_local else set()

    def personal_weights(self, shared: ArrayDict, upto: int) -> ArrayDict:
        saved = self.kept(KEPT, upto)
        if saved is None:
            return shared
        own, mask = _split(saved)
        return {n: torch.where(mask[n], own[n], shared[n]) if n in mask else own[n] for n in own}

    def start_weights(self, message: Message) -> ArrayDict:
        return self.personal_weights(message.arrays["global"], message.round - 1)

    def on_query_style(self, message: Message) -> Reply:
        rt, p = self.runtime, self.params
        rng = rt.rng(message.round, STYLE_PHASE)
        windows: list[torch.Tensor] = []
        while len(windows) < p.bank_size:
            images, _ = rt.data.batch(rng)
            windows += list(low_amplitude(images, p.r))
        bank = torch.stack(windows[: p.bank_size]).cpu()
        return Reply(arrays={"style": {"amplitude": bank}}, num_examples=rt.data.num_train)

    def on_train(self, message: Message) -> Reply:
        reply = super().on_train(message)  # local training from the personal model
        local = reply.arrays.pop("local")
        mask = self.mask(message, local)
        self.runtime.store.save(KEPT, message.round, _joined(local, mask))
        reply.arrays.update(pack(local, mask))
        kept = sum(int(m.sum()) for m in mask.values())
        reply.metrics["kept_fraction"] = kept / max(1, sum(m.numel() for m in mask.values()))
        return reply

    def mask(self, message: Message, local: ArrayDict) -> dict[str, torch.Tensor]:
        """This round's mask over the floating tensors: recomputed when the message brings
        the other sites' styles, else the last one (or the norm layers only)."""
        styles = message.arrays.get(STYLES)
        if not styles:
            saved = self.kept(KEPT, message.round - 1)
            if saved is not None:
                return _split(saved)[1]
            log.info("resfim at site %s: no other site's style yet; only norm layers stay local", self.runtime.name)
            return self.base_mask(local)
        if self.params.rho == 0:
            return self.base_mask(local)
        # in site order: replies (and Flower records) come in any order, and each bank draws
        # its windows from the same generator in turn
        scores = self.residual(message.round, local, [styles[k] for k in sorted(styles, key=int)])
        mask = self.base_mask(local)
        for name, score in scores.items():
            if name not in self.norm_names:
                mask[name] = top_fraction(score, self.params.rho)
        return mask

    def base_mask(self, local: ArrayDict) -> dict[str, torch.Tensor]:
        """Norm layers kept (``norm_local``), everything else shared."""
        floats = (n for n, t in local.items() if torch.is_floating_point(t))
        return {n: torch.full(local[n].shape, n in self.norm_names, dtype=torch.bool) for n in floats}

    def residual(self, rnd: int, local: ArrayDict, banks: list[torch.Tensor]) -> ArrayDict:
        """ResFIM of ``local`` on the site's patches against the same patches in each bank's style."""
        rt, p = self.runtime, self.params
        rng = rt.rng(rnd, FISHER_PHASE)
        batches = [rt.data.batch(rng) for _ in range(p.fisher_batches)]
        pick = rt.rng(rnd, FISHER_PHASE, 1)  # which window of a bank each image takes
        rt.set_weights(local)
        loss_fn = rt.trainer.loss_fn
        own = diagonal_fisher(rt.network, loss_fn, batches, rt.device)
        transferred = []
        for bank in banks:
            windows = [bank[torch.as_tensor(pick.integers(len(bank), size=len(x)))] for x, _ in batches]
            styled = [(transfer_style(x, w, p.r), y) for (x, y), w in zip(batches, windows)]
            transferred.append(diagonal_fisher(rt.network, loss_fn, styled, rt.device))
        return residual_fisher(own, transferred)


def _joined(state: ArrayDict, mask: Mapping[str, torch.Tensor]) -> ArrayDict:
    return {f"own/{n}": t for n, t in state.items()} | {f"mask/{n}": m.to(torch.uint8) for n, m in mask.items()}


def _split(saved: ArrayDict) -> tuple[ArrayDict, dict[str, torch.Tensor]]:
    own = {n[4:]: t for n, t in saved.items() if n.startswith("own/")}
    return own, {n[5:]: t.bool() for n, t in saved.items() if n.startswith("mask/")}


def _non_finite(reply: Reply) -> str | None:
    for group, tensors in reply.arrays.items():
        for name, tensor in tensors.items():
            if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
                return f"{group}/{name} holds NaN or Inf"
    return None


# -- server -------------------------------------------------------------------------------------
@register
class ResFIM(Strategy):
    name = "resfim"
    summary = "pFL-ResFIM (interpretation): each site keeps its most style-sensitive parameters (residual Fisher)"
    Params = ResFIMParams
    site_logic = ResFIMSite
    personalised = True

    def __init__(self, params: ResFIMParams, sites: list) -> None:
        super().__init__(params, sites)
        self.banks: dict[int, torch.Tensor] | None = None  # None: not asked yet

    def recomputes(self, rnd: int) -> bool:
        return (rnd - 1) % self.params.mask_every == 0

    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        if self.banks is None:
            replies = yield {s.index: Message(STYLE, rnd) for s in self.sites}
            banks = {k: r.arrays["style"]["amplitude"] for k, r in replies.items()}
            if len({tuple(b.shape[1:]) for b in banks.values()}) > 1:
                shapes = {k: list(b.shape) for k, b in banks.items()}
                raise FederationError(f"round {rnd}: the sites' style banks differ in shape ({shapes})")
            self.banks = dict(sorted(banks.items()))
        replies = yield self.train_messages(rnd, global_state)
        if not replies:
            raise FederationError(f"round {rnd}: no site returned a model")
        weights = normalise(self.aggregation_weights(replies))  # p_k = n_k / n
        self.alpha = [weights.get(s.index, 0.0) for s in self.sites]
        uploads = {
            k: (r.arrays[SHARED], {n: unpack_mask(b, global_state[n].shape) for n, b in r.arrays[MASK].items()})
            for k, r in replies.items()
        }
        return RoundOutcome.from_replies(masked_average(uploads, weights, global_state), self.alpha, replies)

    def train_messages(self, rnd: int, global_state: ArrayDict) -> dict[int, Message]:
        messages = super().train_messages(rnd, global_state)
        if self.recomputes(rnd) and self.banks:
            for k, message in messages.items():
                others = {str(j): bank for j, bank in self.banks.items() if j != k}
                if others:
                    message.arrays[STYLES] = others
        return messages

    def check_reply(self, message: Message, reply: Reply, model: ArrayDict) -> str | None:
        if message.kind == STYLE:
            bank = reply.arrays.get("style", {}).get("amplitude")
            if bank is None or bank.dim() != 5 or not bool((bank >= 0).all()):
                return "a style bank is (N, C, w, w, w) amplitudes >= 0"
            return _non_finite(reply)
        if message.kind != TRAIN:
            return super().check_reply(message, reply, model)
        problem = _non_finite(reply)
        if problem is not None:
            return problem
        shared, bits = reply.arrays.get(SHARED), reply.arrays.get(MASK)
        if shared is None or bits is None:
            return f"no masked model ('{SHARED}' and '{MASK}')"
        floats = sorted(n for n, t in model.items() if torch.is_floating_point(t))
        for group, got in ((SHARED, shared), (MASK, bits)):
            if sorted(got) != floats:
                wrong = sorted(set(got) ^ set(floats))
                more = " ..." if len(wrong) > 1 else ""
                return f"'{group}' does not name the model's floating tensors ({wrong[0]}{more})"
        for name in floats:
            size = model[name].numel()
            if bits[name].dtype != torch.uint8 or bits[name].numel() != -(-size // 8):
                return f"mask of {name} is not {-(-size // 8)} uint8 bytes"
            expected = size - int(unpack_mask(bits[name], model[name].shape).sum())
            if shared[name].dim() != 1 or shared[name].numel() != expected:
                return f"'{SHARED}' {name} has {shared[name].numel()} values, its mask shares {expected}"
        return None

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        for k, bank in (self.banks or {}).items():
            tensors[f"style.{k}"] = bank.clone()
        return tensors, meta | {"style_sites": None if self.banks is None else sorted(self.banks)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        sites = meta.get("style_sites")
        self.banks = None if sites is None else {int(k): tensors[f"style.{k}"].clone() for k in sites}
