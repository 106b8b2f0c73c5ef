"""The cost of a training step, counted from the shapes: one FLOP model for the ablation and the benchmark.

Lesson 6 sizes its GPU runs with it (steps that fit a time budget, the costliest run first) and shows that
"the same steps" is not "the same compute"; ``bench`` turns tokens per second into MFU with it.

    per layer pass   2 (4 D² + 2 D F)       W_q, W_k, W_v, W_out and the FFN (2 FLOPs per multiply-add)
                   + 2 · 2 L D              c2c scores and probs @ V, against the L keys
                   + 2 R D · #terms         c2p and p2c (eq. 4), each against the R relative-table rows it gathers
    passes           layers
    EMD, 2 passes    the last layer twice more (A.8) on the decoded tokens only (the masked ones, or every
                     one): W_q, W_out, the FFN, the scores and c2p for those queries; K and V of H (2 · 2 D²)
                     and p2c's key side (2 R D) still at every position, in each pass
    MLM head         2 (D² + D V), on the decoded tokens
    a training step  3 x forward (backward ≈ 2 x forward)

Left out, as small beside these: layer norms, softmax, GELU, and projecting the relative table (once per
batch, not per token).
"""

from __future__ import annotations

from deberta_edu.model.config import DebertaConfig
from deberta_edu.model.positions import relative_rows_and_index


def relative_rows(config: DebertaConfig, seq_length: int) -> int:
    """R: how many rows of the relative table a sequence of ``seq_length`` tokens gathers (0 without one)."""
    if not config.relative_attention:
        return 0
    rows, _ = relative_rows_and_index(seq_length, k=config.max_relative_positions,
                                      position_buckets=config.position_buckets)
    return len(rows)  # 2 x table_span, or 2L − 1 when the sequence is shorter than the table


def train_flops_per_token(config: DebertaConfig, seq_length: int, head_fraction: float = 0.15) -> float:
    """Matrix FLOPs of one training step per token (forward + backward = 3 x forward) for ``config``.

    ``head_fraction``: the share of tokens the EMD and the MLM head decode: the masked ones (mlm_probability,
    the default) when only masked logits are computed, 1.0 when there are logits at every position.
    """
    return flops_with_rows(config, seq_length, relative_rows(config, seq_length), head_fraction)


def flops_with_rows(config: DebertaConfig, seq_length: int, rows: int, head_fraction: float = 0.15) -> float:
    """``train_flops_per_token`` with R = ``rows`` relative-table rows gathered per sequence."""
    D, F, L, V, R = config.hidden_size, config.intermediate_size, seq_length, config.vocab_size, rows
    terms = config.position_terms
    per_layer = 2 * (4 * D * D + 2 * D * F) + 2 * 2 * L * D + 2 * R * D * len(terms)
    encoder = config.num_hidden_layers * per_layer
    emd = 0.0
    if config.emd:  # per pass: the query side on the decoded share, the key side at every position
        queries = 2 * (2 * D * D + 2 * D * F) + 2 * 2 * L * D + (2 * R * D if "c2p" in terms else 0)
        keys = 2 * 2 * D * D + (2 * R * D if "p2c" in terms else 0)
        emd = 2 * (head_fraction * queries + keys)
    head = head_fraction * 2 * (D * D + D * V)
    return 3 * (encoder + emd + head)
