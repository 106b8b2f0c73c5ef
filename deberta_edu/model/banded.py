r"""c2p and p2c when δ is a shift: each block of tokens against only the table rows it reads.

For a sequence shorter than the relative window, ``positions.relative_rows_and_index`` keeps one table
row per distance (R = 2L − 1) and index[i, j] = L − 1 − i + j. The gather of Algorithm 1 first scores
every query against all 2L − 1 rows and then reads L of them per query: half the products are thrown
away. Query i reads rows L − 1 − i … 2L − 2 − i, so a block of b consecutive queries reads only
L + b − 1 rows; multiplying each block by its window of the table does about half the work at
b = 16, L = 128 (the bench's shape), and gives the same numbers (tests/test_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def banded_block(length: int) -> int:
    """The block size ``banded`` uses for this length: 16 or 8 tokens, the first that divides it and is shorter
    than it; 0 when none does (so 16 gives 8, and 8 gives 0)."""
    return next((b for b in (16, 8) if length % b == 0 and length > b), 0)


def banded(x, table, keys: bool):
    """c2p (keys=False: x = Q^c) or p2c (keys=True: x = K^c) when index[i, j] = L − 1 − i + j.

    x (B, H, L, d), table (H, 2L − 1, d) the projected rows, one per distance. Returns (B, H, L, L) as a
    (B, H, L/b, b, L/b, b) view. In a block's (b, L + b − 1) scores, token a of the block reads column
    b − 1 − a + j: a diagonal band, taken out by a slice (the relative shift of Transformer-XL,
    Dai et al. 2019). For p2c the same holds for a block of keys with its window reversed, and the band
    comes out transposed, [j, i].
    """
    B, H, L, d = x.shape
    b = banded_block(L)
    n, W = L // b, L + b - 1  # blocks, rows each block reads
    extra = -W % 16  # rows more, never read, so that the products are 16 wide: faster
    W += extra
    blocks = x.transpose(1, 2).reshape(B, n, b, H, d).permute(3, 1, 0, 2, 4).reshape(H * n, B * b, d)
    # queries: block m reads from row L − b − m·b on, the windows in reverse order (zero rows after the
    # table); keys: block m (keys m·b …) reads rows m·b … m·b + L + b − 2, the columns reversed to make
    # the same band (zero rows before the table, so the rows read come first once reversed)
    table = F.pad(table, (0, 0, extra, 0) if keys else (0, 0, 0, extra))
    windows = table.unfold(1, W, b)  # (H, n, d, W): window m is padded rows m·b … m·b + W − 1
    windows = windows.flip(-1) if keys else windows.flip(1)
    scores = torch.bmm(blocks, windows.reshape(H * n, d, W)).view(H, n, B, b, W)
    band = scores.flatten(-2)[..., b - 1: b - 1 + b * (W - 1)].unflatten(-1, (b, W - 1))[..., :L]
    # band[h, m, batch, a, t]: token m·b + a of the block against token t of the sequence
    six = band.unflatten(-1, (n, b))  # (H, n, B, b, n, b)
    # returned as [batch, h, i // b, i % b, j // b, j % b], a view: flatten the last two pairs for (B, H, L, L)
    return six.permute(2, 0, 4, 5, 1, 3) if keys else six.permute(2, 0, 1, 3, 4, 5)
