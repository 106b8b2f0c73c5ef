r"""Virtual adversarial training for fine-tuning: SiFT (paper §4) and plain VAT for text.

A model should not change its answer when its input moves a tiny bit. Virtual adversarial training
finds the small perturbation of the input embeddings that changes the predictions most (one step of
gradient ascent from a random start) and adds the change as a loss, weighted by λ.

**Plain VAT for text** (Miyato, Dai & Goodfellow, 2017; ``VAT``) already normalises: the word
embeddings are standardised per dimension with the vocabulary's word frequencies,
v̄ = (v − E_f[v]) / sqrt(Var_f[v]), and the perturbation r is normalised per example, r = ε g / ‖g‖₂ over
the example's whole sequence (tokens x dimensions), from a start ξ d / ‖d‖₂; the loss is KL(p_clean ‖ p_adv)
with the clean prediction held constant. A pretrained DeBERTa was not trained on v̄, so ``VAT`` adds the
perturbation in those units, v + s ⊙ r with s = sqrt(Var_f[v]): the same as perturbing v̄ by r.

**SiFT** (``SiFT``) perturbs where DeBERTa's own embedding LayerNorm works: every token vector is
layer-normalised on its own (zero mean, unit variance over its dimensions), δ is added there, and the
model's LayerNorm re-normalises the sum. As microsoft/DeBERTa's DeBERTa/sift/sift.py does it: a forward
*pre*-hook on the embedding LayerNorm replaces its input x by n + δ with n = LayerNorm(x) without affine
(ε = 1e-7) and detached, so the perturbed passes send no gradient to the embedding table (the loss still
reaches it through the clean logits, its second cross-entropy's p, as in the official code); the LayerNorm then
computes γ ⊙ LN(n + δ) + β. δ₀ ~ N(0, σ²) clipped to ±2σ, per coordinate; one ascent step
δ₁ = δ₀ + η g / (10⁻⁶ + max_d |g_d|) per token, with g the gradient of the loss summed over the examples;
defaults σ = 1e-2, η = 1e-4 (``vat_init_perturbation``, ``vat_learning_rate`` in DeBERTa/apps/run.py).
What SiFT adds to VAT is the LayerNorm'd embedding (per token, the one the model already computes, no
frequency statistics), not normalisation as such; the per-token L∞ step with its 10⁻⁶ is SMART's (Jiang et al.
2020, which §4 names beside Miyato et al.: ``SmartPerturbation`` in namisan/mt-dnn).

The official "symmetric KL" is not KL(p‖q) + KL(q‖p). It is the sum of two cross-entropies whose target
probabilities are detached, CE(p_t, q_s) + CE(p_s, q_t) = H(p_t) + H(q_s) + KL(p_t‖q_s) + KL(q_s‖p_t): its
value carries both entropies (it is not 0 at p = q), and near p = q its gradient is half the KL + KL
one (``sift_symmetric_ce``; ``loss="kl"`` gives the textbook ``symmetric_kl``, to the ascent and to the loss
alike, where the official ``--vat_loss_fn`` changes the ascent only and always adds the CE + CE).

λ: DeBERTa/apps/run.py defaults to 0 (off); its MNLI scripts (experiments/glue/mnli.sh) use
``--vat_lambda 5`` for base, xxlarge-v2, v3-small and v3-base, and 3 for v3-xsmall. Our default is 1.

Kept options that teach: ``step_eps`` (the official 1e-6 beside the norm; 0 guards only an exact zero);
with a small model's tiny gradients the official step shrinks far below η, lesson 5 measures by how much.
The official code also routes the clean forward through the no-affine LayerNorm; LayerNorm is idempotent
up to its ε, so we leave the clean forward alone (λ = 0 is exactly plain fine-tuning) and a test measures
the difference. The ascent step uses ``torch.autograd.grad`` with respect to δ only, so it leaves no
gradient on the model's parameters (the official code sets requires_grad=False on them instead).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_LN_EPS = 1e-7  # the PerturbationLayer's LayerNorm (no affine)
METHODS = ("sift", "vat")
LOSSES = ("official", "kl")


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) = Σ (p − q)(log p − log q), averaged over rows; symmetric, >= 0, 0 iff p = q."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def sift_symmetric_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official SiFT loss: CE(p_target, q) + CE(q, p_target), each target probability detached; row mean.

    ``logits`` are the perturbed model's (the student), ``target`` the clean ones (the teacher). Gradients
    flow through both log-probabilities: the student moves towards the teacher and the teacher towards the
    student, each by (its own softmax − the other's), half the gradient of KL + KL near p = q.
    """
    log_q = F.log_softmax(logits.reshape(-1, logits.size(-1)).float(), dim=-1)  # (rows, C) student
    log_p = F.log_softmax(target.reshape(-1, target.size(-1)).float(), dim=-1)  # (rows, C) teacher
    forward = -(log_p.exp().detach() * log_q).sum(-1)  # CE(p_t, q_s)
    backward = -(log_q.exp().detach() * log_p).sum(-1)  # CE(p_s, q_t)
    return (forward + backward).mean()


def clean_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """VAT's loss (Miyato et al.): KL(p_clean ‖ p_adv), the clean prediction held constant; row mean."""
    log_q = F.log_softmax(logits.float(), dim=-1)
    log_p = F.log_softmax(target.detach().float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def layer_norm0(x: torch.Tensor, eps: float = OFFICIAL_LN_EPS) -> torch.Tensor:
    """LayerNorm over the last dimension without γ, β: each token vector to zero mean, unit variance."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


@dataclass
class AdversarialConfig:
    lam: float = 1.0  # λ, the weight of the adversarial loss; 0 = plain fine-tuning (official MNLI: 5)
    method: str = "sift"  # "sift" (the paper's §4, as DeBERTa/sift/sift.py) or "vat" (Miyato et al. 2017)
    sigma: float = 1e-2  # SiFT: σ of δ₀ ~ N(0, σ²), clipped to ±2σ (official vat_init_perturbation)
    step_size: float = 1e-4  # SiFT: η of the ascent step (official vat_learning_rate)
    step_eps: float = 1e-6  # SiFT: the step is η g / (step_eps + ‖g‖∞); 0 = only an exact zero is guarded
    loss: str = "official"  # SiFT: "official" (CE + CE, detached targets) or "kl" (KL + KL)
    vat_xi: float = 0.1  # VAT: L2 size per example of the random start (Miyato's finite-difference constant)
    vat_epsilon: float = 5.0  # VAT: L2 size per example of r_adv (Miyato et al.'s value on IMDB)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lam < 0 or self.sigma < 0 or self.step_size < 0 or self.step_eps < 0:
            raise ValueError(f"lam, sigma, step_size and step_eps must be >= 0, got {self}")


class SiFT:
    """SiFT's adversarial loss for a model whose ``embeddings.norm`` is the embedding LayerNorm.

    ``logits_fn()`` runs the model on the current batch and returns logits; while the adversary runs it,
    the LayerNorm reads n + δ (see the module docstring).
    """

    grad_scale = 1.0  # fp16: the GradScaler's scale, for the ascent's own backward (``finetune`` sets it each step)

    def __init__(self, embeddings: nn.Module, config: AdversarialConfig, generator: torch.Generator | None = None):
        self.norm, self.config, self.generator = embeddings.norm, config, generator

    @contextmanager
    def perturbed(self, delta: torch.Tensor):
        """Within the block the embedding LayerNorm's input x becomes LN₀(x).detach() + δ."""

        def pre_hook(_module, args):
            x = args[0]
            return (layer_norm0(x).detach() + delta).to(x.dtype), *args[1:]

        handle = self.norm.register_forward_pre_hook(pre_hook)
        try:
            yield
        finally:
            handle.remove()

    def loss_fn(self, logits, target):
        return sift_symmetric_ce(logits, target) if self.config.loss == "official" else symmetric_kl(logits, target)

    def initial_delta(self, shape, device) -> torch.Tensor:
        s = self.config.sigma
        noise = torch.randn(shape, generator=self.generator).to(device) * s  # float32, as the official
        return noise.clamp(-2 * s, 2 * s)

    def delta_grad(self, logits_fn, clean_logits, delta) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂L/∂δ, L/rows) with L the loss summed over the examples (official), the clean logits held fixed."""
        delta = delta.detach().requires_grad_(True)
        with self.perturbed(delta):
            logits = logits_fn()
        rows = logits.reshape(-1, logits.size(-1)).size(0)
        loss = self.loss_fn(logits, clean_logits.detach()) * rows  # the official .sum() over rows
        return _scaled_grad(loss, delta, self.grad_scale, rows), loss.detach() / rows

    def ascent_step(self, logits_fn, clean_logits, delta0) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ₁, loss at δ₀): one step of gradient ascent on δ; no gradient reaches the model's parameters."""
        grad, loss0 = self.delta_grad(logits_fn, clean_logits, delta0)
        if not torch.isfinite(grad).all():  # the official update_delta gives up and keeps δ₀
            return delta0.detach(), loss0
        norm = grad.abs().amax(dim=-1, keepdim=True)  # (B, L, 1) L∞ per token over the hidden dimension
        norm = norm + self.config.step_eps if self.config.step_eps else norm.clamp_min(torch.finfo(norm.dtype).tiny)
        return (delta0 + self.config.step_size * grad / norm).detach(), loss0

    def loss(self, logits_fn, clean_logits, shape, mask=None, delta0=None) -> tuple[torch.Tensor, dict]:
        """λ · loss(perturbed, clean) at δ₁, and statistics for plots. ``shape`` is (B, L, D); ``mask`` unused."""
        if self.config.lam == 0:
            return clean_logits.new_zeros(()), {}
        delta0 = self.initial_delta(shape, clean_logits.device) if delta0 is None else delta0
        delta1, loss0 = self.ascent_step(logits_fn, clean_logits, delta0)
        with self.perturbed(delta1):
            adv = self.loss_fn(logits_fn(), clean_logits)
        step = (delta1 - delta0).abs().amax(-1)  # (B, L) the ascent step's L∞ per token
        stats = {"adv_loss_initial": loss0.item(), "adv_loss": adv.item(), "step_linf_per_token": step.mean().item(),
                 "delta_linf_per_token": delta1.abs().amax(-1).mean().item()}
        return self.config.lam * adv, stats


class VAT:
    """Plain VAT for text (Miyato et al. 2017): r in frequency-standardised units, L2-normalised per example.

    ``frequencies`` (vocab_size,) weights the per-dimension statistics of the embedding table (uniform
    when None; Miyato et al. count the training set's words).
    """

    grad_scale = 1.0  # fp16: the GradScaler's scale, for the ascent's own backward (``finetune`` sets it each step)

    def __init__(self, embeddings: nn.Module, config: AdversarialConfig, generator: torch.Generator | None = None,
                 frequencies: torch.Tensor | None = None):
        self.embed, self.config, self.generator = embeddings.word_embeddings, config, generator
        V = self.embed.num_embeddings
        f = torch.ones(V) if frequencies is None else torch.as_tensor(frequencies, dtype=torch.float).clone()
        if f.shape != (V,) or (f < 0).any() or f.sum() <= 0:
            raise ValueError(f"frequencies must be {V} non-negative counts, not all 0; got shape {tuple(f.shape)}")
        self.frequencies = f / f.sum()  # (V,)

    def scale(self) -> torch.Tensor:
        """(D,) sqrt(Var_f[v]) of the current table: one unit of v̄ in each dimension."""
        W = self.embed.weight.detach().float()  # (V, D)
        f = self.frequencies.to(W.device)[:, None]
        mean = (f * W).sum(0)
        return ((f * (W - mean) ** 2).sum(0) + 1e-6).sqrt()

    @contextmanager
    def perturbed(self, r: torch.Tensor):
        """Within the block the word embeddings v become v + s ⊙ r."""
        s = self.scale()
        handle = self.embed.register_forward_hook(lambda _m, _i, out: out + (s * r).to(out.dtype))
        try:
            yield
        finally:
            handle.remove()

    @staticmethod
    def per_example_unit(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x / ‖x‖₂ per example over (L, D), padding set to 0 first."""
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        return x / x.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]

    def ascent_step(self, logits_fn, clean_logits, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_adv, loss at the random start): r_adv = ε g / ‖g‖₂ per example, g taken at r₀ = ξ d / ‖d‖₂."""
        B, L = clean_logits.size(0), (mask.size(1) if mask is not None else None)
        shape = (B, L, self.embed.embedding_dim)
        d = torch.randn(shape, generator=self.generator).to(clean_logits.device)
        r0 = (self.config.vat_xi * self.per_example_unit(d, mask)).requires_grad_(True)
        with self.perturbed(r0):
            loss0 = clean_kl(logits_fn(), clean_logits)
        grad = _scaled_grad(loss0 * B, r0, self.grad_scale, B)
        if not torch.isfinite(grad).all():  # the scaled backward overflowed: the random direction, as SiFT keeps δ₀
            grad = d
        return (self.config.vat_epsilon * self.per_example_unit(grad, mask)).detach(), loss0.detach()

    def loss(self, logits_fn, clean_logits, shape=None, mask=None, delta0=None) -> tuple[torch.Tensor, dict]:
        """λ · KL(p_clean ‖ p(v + s ⊙ r_adv)); ``mask`` (B, L) is needed (the sequence length and padding)."""
        if self.config.lam == 0:
            return clean_logits.new_zeros(()), {}
        if mask is None:
            raise ValueError("VAT needs the attention mask (B, L) to normalise r over each example's real tokens")
        r_adv, loss0 = self.ascent_step(logits_fn, clean_logits, mask)
        with self.perturbed(r_adv):
            adv = clean_kl(logits_fn(), clean_logits)
        return self.config.lam * adv, {"adv_loss_initial": loss0.item(), "adv_loss": adv.item()}


def _scaled_grad(loss: torch.Tensor, wrt: torch.Tensor, grad_scale: float, rows: int) -> torch.Tensor:
    """∂loss/∂wrt for ``loss`` summed over ``rows``; with a ``grad_scale`` (fp16) the backward runs on a scaled loss.

    Under fp16 autocast the backward runs through fp16 activations, and the ascent's gradient, which the
    GradScaler never sees (it scales only the training loss), underflows there: in a tiny classifier every token
    but [CLS] got an all-zero gradient. So the backward runs on the mean loss times the scaler's scale, the units
    the scaler calibrates, and the float32 result is divided back. grad_scale 1 (float32, bf16) changes nothing.
    The official code runs this backward unscaled; in exact arithmetic the two are the same step.
    """
    if grad_scale == 1.0:
        return torch.autograd.grad(loss, [wrt])[0]
    factor = grad_scale / rows
    return torch.autograd.grad(loss * factor, [wrt])[0] / factor


def build_adversary(embeddings: nn.Module, config: AdversarialConfig, generator: torch.Generator | None = None,
                    frequencies: torch.Tensor | None = None) -> SiFT | VAT:
    """The adversary ``config.method`` names, for a model's ``embeddings`` module."""
    if config.method == "vat":
        return VAT(embeddings, config, generator, frequencies)
    return SiFT(embeddings, config, generator)
