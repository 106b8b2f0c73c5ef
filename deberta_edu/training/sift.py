r"""Virtual adversarial training: scale-invariant fine-tuning (SiFT, paper §4) and plain VAT.

A model should not change its answer when its input moves a tiny bit. Virtual adversarial training
(Miyato et al.) looks for the small perturbation δ of the input embeddings that changes the
predictions most, and adds the change as a loss:

$$\mathcal{L} = \mathcal{L}_{task} + \lambda\,
  \mathrm{KL}_{sym}\big(f(x),\, f(x + \delta^*)\big), \qquad
  \delta^* \approx \arg\max_{\|\delta\|\le\epsilon} \mathrm{KL}_{sym}\big(f(x), f(x + \delta)\big)$$

found with one step of gradient ascent from random noise.

The catch is the size of δ: embedding vectors of different words and different models have very
different norms, so one ε is huge for one and nothing for another. SiFT perturbs the
*layer-normalized* word embeddings instead, where every token has zero mean and unit variance, so
σ = 1e-2 means the same everywhere. In our model the embedding LayerNorm computes
e = γ ⊙ n + β with n the normalized vector; SiFT replaces n by n + δ, i.e. e by e + γ ⊙ δ
(a forward hook, as in the official code; with δ = 0 the model is unchanged).

As the official implementation: δ₀ ~ N(0, σ²) clipped to ±2σ; one ascent step
δ₁ = δ₀ + η g / max_d |g| (the gradient normalised per token by its L∞ norm over the hidden
dimension); the adversarial loss is the symmetric KL between clean and perturbed predictions.
The ascent step uses ``torch.autograd.grad`` with respect to δ only, so it leaves no gradient on
the model's parameters.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) = Σ (p − q)(log p − log q), averaged over rows; symmetric, >= 0, 0 iff p = q."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


@dataclass
class AdversarialConfig:
    lam: float = 1.0  # λ, the weight of the adversarial loss; 0 = plain fine-tuning
    sigma: float = 1e-2  # σ of the initial noise (clipped to ±2σ)
    step_size: float = 1e-3  # η of the ascent step
    normalized: bool = True  # True: SiFT (normalized embeddings); False: plain VAT on the raw embeddings


@contextmanager
def perturb(module: nn.Module, delta: torch.Tensor, scale: torch.Tensor | None = None):
    """Within the block, ``module``'s output x becomes x + scale ⊙ δ (scale=None: x + δ)."""

    def hook(_module, _inputs, output):
        return output + (delta if scale is None else scale * delta).to(output.dtype)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class Adversary:
    """Computes the adversarial loss of SiFT (``normalized=True``) or plain VAT for a model.

    ``logits_fn()`` runs the model on the current batch and returns logits; the adversary perturbs
    the embedding LayerNorm's normalized output (SiFT) or the raw word embeddings (VAT) while it runs.
    """

    def __init__(self, embeddings: nn.Module, config: AdversarialConfig, generator: torch.Generator | None = None):
        self.config = config
        self.generator = generator
        if config.normalized:
            self.target, self.scale = embeddings.norm, embeddings.norm.weight  # e + γ ⊙ δ = γ ⊙ (n + δ) + β
        else:
            self.target, self.scale = embeddings.word_embeddings, None

    def initial_delta(self, shape, device) -> torch.Tensor:
        s = self.config.sigma
        noise = torch.randn(shape, generator=self.generator).to(device) * s
        return noise.clamp(-2 * s, 2 * s)

    def ascent_step(self, logits_fn, clean_logits, delta0):
        """One step of gradient ascent on δ; no gradient reaches the model's parameters."""
        delta0 = delta0.detach().requires_grad_(True)
        scale = None if self.scale is None else self.scale.detach()
        with perturb(self.target, delta0, scale):
            loss0 = symmetric_kl(logits_fn(), clean_logits.detach())
        (grad,) = torch.autograd.grad(loss0, [delta0])
        # L∞ per token over the hidden dim. The official code adds 1e-6 to the norm; near δ = 0 the KL is
        # flat and its gradient far smaller than that, so we only guard against an exact zero (padding).
        step = grad / grad.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
        return (delta0 + self.config.step_size * step).detach(), loss0.detach()

    def loss(self, logits_fn, clean_logits, shape) -> tuple[torch.Tensor, dict]:
        """λ · KL_sym(clean, perturbed) with δ from one ascent step; plus statistics for plots."""
        if self.config.lam == 0:
            return clean_logits.new_zeros(()), {}
        device = clean_logits.device
        delta0 = self.initial_delta(shape, device)
        delta1, loss0 = self.ascent_step(logits_fn, clean_logits, delta0)
        with perturb(self.target, delta1, self.scale):
            adv = symmetric_kl(logits_fn(), clean_logits)
        stats = {"adv_loss_initial": loss0.item(), "adv_loss": adv.item(),
                 "delta_linf_per_token": delta1.abs().amax(-1).mean().item()}
        return self.config.lam * adv, stats
