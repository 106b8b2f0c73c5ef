"""The model wing: DeBERTa itself, in the order of the paper, importing nothing above it.

config (sizes, variants) → positions (δ(i, j), eq. 3; log buckets) → attention (c2c, c2p, p2c, p2p;
naive and fast) → encoder (embeddings, layers; builds the keep mask and the relative table once and hands
them to the EMD in an EncoderState) → emd (Enhanced Mask Decoder, MLM head)
→ classify (sequence classification head); checkpoint (safetensors) and interop (transformers ⇄ ours).
"""
