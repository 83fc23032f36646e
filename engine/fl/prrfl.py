"""PRR-FL: Personalized Retrogress-Resilient FL (Chen, Zhu, Yang, Yuan; MICCAI 2021; ALGORITHMS.md 4).

Each site keeps two models: a *personal* model, never overwritten by the server, and a
*deputy*, the only one it uploads. The server mixes the deputies by *progressive Fourier
aggregation* (PFA, 4.2) and sends every site a deputy of its own; the site trains both
models together by *deputy-enhanced transfer* (DET, 4.3). Validation and test use the
personal model.

PFA, per convolution or linear weight (module type, never key names): reshape it to a
matrix (a kernel (N, C, k1, ..., kd) to (C k1 ... k_{d-1}) x (kd N); 4.5), take its 2D
FFT A_k e^{i P_k} for every site k, and give site k the matrix whose amplitude is the mean
amplitude (1/K) sum_j A_j inside a centred low-frequency window covering a fraction L_t
of each axis, its own A_k outside, always with its own phase P_k. The window grows with
the rounds, L_t = L_0 + (t / T)(0.95 - L_0), t = 0 at the first aggregation (the code's
``a_iter``), so ever more of the spectrum is shared. Other floating tensors (biases,
PReLU slopes) are averaged 1/K into every deputy; normalisation tensors stay each site's
(FedBN, by module type as in :mod:`engine.fl.fedbn`).

DET: a round's local steps are split into ``epochs`` blocks; at the start of each block
the site compares the two models' training Dice, D_d (deputy) and D_p (personal), and
picks a stage (the stage restarts at 0 each round, so the first block always recovers):

- *Recover* (first block, or D_d < alpha1 D_p): personal: seg loss; deputy: seg + KL to the personal;
- *Exchange* (after Recover, or alpha1 D_p <= D_d < alpha2 D_p): both learn from each other;
- *Sublimate* (D_d >= alpha2 D_p after Exchange): personal: seg + KL to the deputy; deputy: seg loss.

With a single block the code always exchanges. The KL is KL(p_teacher || p_student) with
the teacher detached, no temperature, weight 1.

Choices [I]:

- *Segmentation* (4.5): the class loss is the run's segmentation loss (``train.loss``),
  the KL is per voxel (summed over the two classes, averaged over voxels: the per-voxel
  analogue of ``batchmean``), macro-F1 becomes the hard lesion Dice.
- *Local epochs*: the engine's unit of local work is ``train.local_steps``, so a round is
  the same number of steps as for every other method (each step trains both models on the
  same batch), cut into ``epochs`` blocks (the paper's 5 local epochs per round).
- *Training Dice*: the stage test uses the Dice each model reached on the previous block's
  own training batches (pooled over the block), read from the forward passes training
  makes anyway, instead of an extra pass of both models over the training set per epoch.
- *Optimiser*: one Adam of ``train`` over both models per round; Adam is per parameter, so
  this is one Adam per model, as in the code (which also restarts them every round).
- *Window*: symmetric in frequency, |f| < L n / 2 on each axis (and everything at L = 1),
  so the mixed spectrum stays Hermitian and the inverse FFT is real. The code's window
  [c - b, c + b) is one bin lopsided; with it L = 1 would miss a row on odd sizes.
- *Personal model*: starts as the first deputy received (the common initial model).
- *Shared model*: the server's global model is the plain 1/K average of the uploaded
  deputies (FedAvg-even; norm tensors too); it is what ``global_model.safetensors`` offers
  an unseen site. Sites never train from it.
- *Missing site*: a site that does not reply keeps its previous deputy; the mean
  amplitude is over the sites that replied.
- *Transposed convolutions* are reshaped by the same index rule (dim 0 plays N).
- *Local model* (the K x K matrix): the uploaded deputy, as for Ditto's global copy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import ConfigError, FederationError
from engine.fl.aggregate import normalise, weighted_average
from engine.fl.base import RoundOutcome, Strategy
from engine.fl.fedbn import norm_state_names
from engine.fl.personal import PersonalisedSite
from engine.fl.protocol import TRAIN, ArrayDict, Exchange, Message, Reply
from engine.fl.registry import register
from engine.fl.site import SiteRuntime
from engine.model.networks import build_network
from engine.training.trainer import LocalTrainer, make_optimizer

log = logging.getLogger(__name__)

KEPT = "personal"  # the site-store key of the personal model
DEPUTY = "deputy"  # the message group of a site's deputy
RECOVER, EXCHANGE, SUBLIMATE = 1, 2, 3
KERNEL_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class PRRFLParams:
    """The released code's defaults (ALGORITHMS.md 4.2-4.3)."""

    l0: float = 0.7  # L_0, the code's ``l_rate``: window fraction of each axis at the first aggregation
    l_end: float = 0.95  # the window fraction L_T reaches after the last round
    alpha1: float = 0.7  # Recover while D_deputy < alpha1 * D_personal
    alpha2: float = 0.9  # Sublimate once D_deputy >= alpha2 * D_personal
    epochs: int = 5  # DET blocks per round (the paper's local epochs)

    def __post_init__(self) -> None:
        if not 0.0 <= self.l0 <= 1.0:
            raise ConfigError(f"strategy.params.l0: must be in [0, 1] (fraction of each spectrum axis), got {self.l0}")
        if not self.l0 <= self.l_end <= 1.0:
            raise ConfigError(f"strategy.params.l_end: must be in [l0, 1] = [{self.l0}, 1], got {self.l_end}")
        if self.alpha1 < 0:
            raise ConfigError(f"strategy.params.alpha1: must be >= 0, got {self.alpha1}")
        if self.alpha2 < self.alpha1:
            raise ConfigError(f"strategy.params.alpha2: must be >= alpha1 = {self.alpha1}, got {self.alpha2}")
        if self.epochs < 1:
            raise ConfigError(f"strategy.params.epochs: must be >= 1, got {self.epochs}")


# -- progressive Fourier aggregation (server) -------------------------------------------------
def pfa_ratio(t: int, rounds: int, l0: float = 0.7, l_end: float = 0.95) -> float:
    """L_t = L_0 + (t / T)(L_end - L_0); the aggregation after round r uses t = r - 1."""
    return l0 + (t / rounds) * (l_end - l0)


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A linear weight as it is; a kernel (N, C, k1, ..., kd) as (C k1 ... k_{d-1}) x (kd N)."""
    if weight.dim() == 2:
        return weight
    moved = weight.movedim(0, -1)  # (C, k1, ..., kd, N)
    return moved.reshape(math.prod(moved.shape[:-2]), -1)


def from_matrix(matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`as_matrix` for a weight of ``shape``."""
    if len(shape) == 2:
        return matrix.reshape(shape)
    return matrix.reshape(*shape[1:], shape[0]).movedim(-1, 0)


def _signed_frequencies(n: int) -> torch.Tensor:
    f = torch.arange(n)
    return torch.where(f < (n + 1) // 2, f, f - n)  # numpy's fftfreq * n, exactly


def low_frequency_window(rows: int, cols: int, ratio: float) -> torch.Tensor:
    """Boolean (rows, cols) mask, in FFT (unshifted) order, of the frequencies with
    |f| < ratio * n / 2 on both axes: empty at 0, the whole spectrum at 1, symmetric."""
    if ratio >= 1.0:
        return torch.ones(rows, cols, dtype=torch.bool)
    inside = [2 * _signed_frequencies(n).abs() < ratio * n for n in (rows, cols)]
    return inside[0][:, None] & inside[1][None, :]


def fourier_aggregate(weights: Sequence[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """PFA of one weight: site k's result has the mean amplitude inside the window, its own
    amplitude outside and its own phase everywhere (float64 FFTs, cast back)."""
    spectra = torch.stack([torch.fft.fft2(as_matrix(w.detach().to(torch.float64))) for w in weights])
    amplitude = spectra.abs()
    window = low_frequency_window(*spectra.shape[-2:], ratio)
    mixed = torch.where(window, amplitude.mean(dim=0), amplitude)
    out = torch.fft.ifft2(torch.polar(mixed, spectra.angle())).real
    return [from_matrix(o, w.shape).to(w.dtype) for o, w in zip(out, weights)]


def progressive_fourier_aggregation(
    deputies: Mapping[int, ArrayDict], ratio: float, kernels: set[str], local: set[str]
) -> dict[int, ArrayDict]:
    """Every site's next deputy: PFA on ``kernels``, its own ``local`` (norm) and integer
    tensors, the 1/K average of everything else."""
    keys = sorted(deputies)
    out: dict[int, ArrayDict] = {k: {} for k in keys}
    for name, ref in deputies[keys[0]].items():
        if name in local or not torch.is_floating_point(ref):
            for k in keys:
                out[k][name] = deputies[k][name].clone()
        elif name in kernels:
            for k, mixed in zip(keys, fourier_aggregate([deputies[k][name] for k in keys], ratio)):
                out[k][name] = mixed
        else:
            mean = torch.stack([deputies[k][name].to(torch.float64) for k in keys]).mean(dim=0).to(ref.dtype)
            for k in keys:
                out[k][name] = mean.clone()
    return out


def kernel_names(network: nn.Module) -> list[str]:
    """State-dict names of the weights of ``network``'s convolution and linear modules."""
    in_state = set(network.state_dict())
    kernels = (prefix for prefix, m in network.named_modules() if isinstance(m, KERNEL_TYPES))
    names = (f"{prefix}.weight" if prefix else "weight" for prefix in kernels)
    return [name for name in names if name in in_state]


# -- deputy-enhanced transfer (site) -----------------------------------------------------------
def next_stage(stage: int, dice_personal: float, dice_deputy: float, alpha1: float, alpha2: float) -> int:
    """The DET stage of the next block (``stage`` 0: the round's first block)."""
    if stage == 0 or dice_deputy < alpha1 * dice_personal:
        return RECOVER
    if stage == RECOVER or dice_deputy < alpha2 * dice_personal:
        return EXCHANGE
    return SUBLIMATE


def voxel_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || p_student) per voxel over the class axis, averaged over voxels; the
    teacher is detached."""
    log_p = F.log_softmax(student, dim=1)
    target = F.softmax(teacher.detach(), dim=1)
    return F.kl_div(log_p, target, reduction="none").sum(dim=1).mean()


class DeputyPair(nn.Module):
    """The personal model and the deputy as one module: one forward gives both outputs."""

    def __init__(self, personal: nn.Module, deputy: nn.Module) -> None:
        super().__init__()
        self.personal = personal
        self.deputy = deputy

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.personal(x), self.deputy(x)


class DeputyLoss:
    """The DET loss of one step for the current ``stage``, summed over both models (their
    parameters are disjoint, so each gets its own gradient); tallies each model's
    segmentation loss and hard lesion Dice."""

    def __init__(self, segmentation: nn.Module) -> None:
        self.segmentation = segmentation
        self.stage = RECOVER
        self.losses: dict[str, list[float]] = {"personal": [], "deputy": []}
        self.overlap: dict[str, list[float]] = {}
        self.reset()

    def reset(self) -> None:
        self.overlap = {"personal": [0.0, 0.0], "deputy": [0.0, 0.0]}  # 2 |P & Y|, |P| + |Y|

    def dice(self, model: str) -> float:
        twice, total = self.overlap[model]
        return twice / total if total > 0 else 1.0

    def __call__(self, outputs: tuple[torch.Tensor, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        personal, deputy = outputs
        seg_p, seg_d = self.segmentation(personal, label), self.segmentation(deputy, label)
        loss_p = seg_p + voxel_kl(personal, deputy) if self.stage >= EXCHANGE else seg_p
        loss_d = seg_d + voxel_kl(deputy, personal) if self.stage <= EXCHANGE else seg_d
        with torch.no_grad():
            truth = label[:, 0] > 0.5
            for model, out, seg in (("personal", personal, seg_p), ("deputy", deputy, seg_d)):
                predicted = out.argmax(dim=1) == 1
                self.overlap[model][0] += 2.0 * float((predicted & truth).sum())
                self.overlap[model][1] += float(predicted.sum() + truth.sum())
                self.losses[model].append(float(seg))
        return loss_p + loss_d


class PRRFLSite(PersonalisedSite):
    """Trains its personal model and the received deputy by DET; uploads the deputy."""

    def __init__(self, params: PRRFLParams, runtime: SiteRuntime) -> None:
        super().__init__(params, runtime)
        self._deputy: nn.Module | None = None

    def personal_weights(self, shared: ArrayDict, upto: int) -> ArrayDict:
        own = self.kept(KEPT, upto)
        return shared if own is None else own

    def pair(self) -> DeputyPair:
        """The runtime's network (personal) and a second one of the same kind (deputy)."""
        rt = self.runtime
        if self._deputy is None:
            self._deputy = build_network(rt.config.model.network, rt.config.model.args).to(rt.device)
        return DeputyPair(rt.network, self._deputy)

    def on_train(self, message: Message) -> Reply:
        rt, rnd = self.runtime, message.round
        deputy = message.arrays.get(DEPUTY)
        if deputy is None:
            raise FederationError(f"site {rt.name}: prrfl 'train' message without a deputy")
        pair = self.pair()
        pair.personal.load_state_dict(self.personal_weights(deputy, rnd - 1), strict=True)
        pair.deputy.load_state_dict(deputy, strict=True)
        loss, stages = self.transfer(pair, rnd)
        personal = {k: v.detach().to("cpu").clone() for k, v in pair.personal.state_dict().items()}
        local = {k: v.detach().to("cpu").clone() for k, v in pair.deputy.state_dict().items()}
        rt.store.save(KEPT, rnd, personal)
        val = rt.track_best_local(rnd, local)
        return Reply(
            arrays={"local": local},
            metrics={
                "train_loss": float(np.mean(loss.losses["personal"])),
                "deputy_train_loss": float(np.mean(loss.losses["deputy"])),
                "det_stages": stages,
                "local_val_dice": val,
            },
            num_examples=rt.data.num_train,
        )

    def transfer(self, pair: DeputyPair, rnd: int) -> tuple[DeputyLoss, list[int]]:
        """``train.local_steps`` joint steps in ``epochs`` blocks, each with its DET stage."""
        rt, p = self.runtime, self.params
        steps = rt.config.train.local_steps
        blocks = [len(b) for b in np.array_split(np.arange(steps), min(p.epochs, steps))]
        trainer = LocalTrainer(pair, rt.config.train, rt.device)
        loss = DeputyLoss(trainer.loss_fn)
        trainer.loss_fn = loss  # the trainer's loop (AMP, divergence check) with DET's two-model loss
        optimizer = make_optimizer(pair, rt.config.train)
        rt.seed_torch(rnd)
        rng = rt.rng(rnd)  # one stream across the blocks: the patches plain local training draws
        stage, stages, done = 0, [], 0
        for size in blocks:
            if len(blocks) == 1:
                stage = EXCHANGE  # the code's rule for one local epoch
            else:
                stage = next_stage(stage, loss.dice("personal"), loss.dice("deputy"), p.alpha1, p.alpha2)
            loss.stage = stage
            loss.reset()
            trainer.train(
                rt.data.batch,
                size,
                rng,
                optimizer=optimizer,
                on_step=lambda s, n, value, done=done: rt.progress(rnd, "train", done + s, steps, value),
                input_transform=rt.train_input,
                gradient=rt.gradient,
            )
            stages.append(stage)
            done += size
        return loss, stages


@register
class PRRFL(Strategy):
    name = "prrfl"
    summary = "PRR-FL: personal models stay home; per-site deputies mixed by progressive Fourier aggregation"
    Params = PRRFLParams
    site_logic = PRRFLSite
    personalised = True

    def __init__(self, params: PRRFLParams, sites: list) -> None:
        super().__init__(params, sites)
        self.deputies: dict[int, ArrayDict] = {}
        self.rounds: int | None = None
        self.kernels: set[str] = set()
        self.local: set[str] = set()

    def configure(self, config: Any) -> None:
        """T for the schedule; which tensors are kernels and norms, from the network itself."""
        network = build_network(config.model.network, config.model.args)
        self.kernels, self.local = set(kernel_names(network)), set(norm_state_names(network))
        self.rounds = config.rounds

    def train_messages(self, rnd: int, global_state: ArrayDict) -> dict[int, Message]:
        """Each site its own deputy (round 1, or a site never aggregated: the global model)."""
        return {
            s.index: Message(TRAIN, rnd, arrays={DEPUTY: self.deputies.get(s.index, global_state)}) for s in self.sites
        }

    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        if self.rounds is None:
            raise FederationError("prrfl: configure(config) must run before the first round (the coordinator does)")
        replies = yield self.train_messages(rnd, global_state)
        if not replies:
            raise FederationError(f"round {rnd}: no site returned a deputy")
        uploaded = {k: r.arrays["local"] for k, r in replies.items()}
        ratio = pfa_ratio(rnd - 1, self.rounds, self.params.l0, self.params.l_end)
        log.info("prrfl round %d: Fourier window L = %.4f of each kernel-spectrum axis", rnd, ratio)
        self.deputies.update(progressive_fourier_aggregation(uploaded, ratio, self.kernels, self.local))
        weights = normalise({k: 1.0 for k in replies})
        self.alpha = [weights.get(s.index, 0.0) for s in self.sites]
        return RoundOutcome.from_replies(weighted_average(uploaded, weights), self.alpha, replies)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        for k, deputy in self.deputies.items():
            tensors.update({f"{DEPUTY}.{k}.{name}": t.clone() for name, t in deputy.items()})
        return tensors, meta | {"deputy_sites": sorted(self.deputies)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        self.deputies = {}
        for k in meta.get("deputy_sites", []):
            prefix = f"{DEPUTY}.{k}."
            self.deputies[int(k)] = {n[len(prefix):]: t.clone() for n, t in tensors.items() if n.startswith(prefix)}
