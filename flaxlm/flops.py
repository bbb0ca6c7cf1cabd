"""Model FLOPs of a train step, and accelerators' published peak FLOP/s: the two halves of MFU.

Model FLOPs count the matrix multiplications the model needs, not what an
implementation happens to execute: recomputation (remat) is not counted, and
neither is a vocabulary projection over positions that have no target (BERT's
MLM head scores only the masked positions). A multiply-add is 2 FLOPs; a
train step costs 3x the forward pass (the backward pass computes gradients
for both operands of every matmul). Per token that is, as in the PaLM paper
(Chowdhury et al. 2022, appendix B),

    6 * N + 12 * L * D * T

N: the weights each token goes through in a matmul (embedding lookups are
not matmuls, the tied output projection is; with ALBERT's factorised
embeddings of width E, the E -> D projection is, and the MLM head is D -> E
then E -> V; a block shared by several layers counts once per layer, as
each layer runs it; SpanBERT's span-boundary head is two dense layers and the
tied projection again on the masked positions); L layers, D hidden size, T
sequence length. 12 * L * D * T is attention's two products (q k^T and
probs v, 2 * T * D FLOPs each per token and layer, times 3). It counts the
full T x T square even for causal models, as PaLM does.

Elementwise work (softmax, LayerNorm, GELU, dropout, the optimizer update)
is not counted; `tests/test_benchmark.py` checks that on a small model it is
a few percent of XLA's own count.
"""

from typing import Any, Mapping

# Dense (no sparsity) peak FLOP/s of one chip from the vendors' spec sheets, per compute dtype:
# (device_kind substring, dtype) -> (FLOP/s, source). The first matching entry wins, so more
# specific names come first. float32 matmuls run as TF32 on NVIDIA tensor cores (XLA's default
# precision), so their float32 entries are TF32 rates.
PUBLISHED_PEAK_FLOPS: dict[tuple[str, str], tuple[float, str]] = {
    ("H100 PCIe", "bfloat16"): (756e12, "NVIDIA H100 PCIe spec sheet, BF16 dense"),
    ("H100 PCIe", "float32"): (378e12, "NVIDIA H100 PCIe spec sheet, TF32 dense"),
    ("H100 NVL", "bfloat16"): (835e12, "NVIDIA H100 NVL spec sheet, BF16 dense"),
    ("H100 NVL", "float32"): (418e12, "NVIDIA H100 NVL spec sheet, TF32 dense"),
    ("H100", "bfloat16"): (989e12, "NVIDIA H100 SXM spec sheet, BF16 dense"),
    ("H100", "float32"): (494e12, "NVIDIA H100 SXM spec sheet, TF32 dense"),
    ("H200", "bfloat16"): (989e12, "NVIDIA H200 SXM spec sheet, BF16 dense"),
    ("H200", "float32"): (494e12, "NVIDIA H200 SXM spec sheet, TF32 dense"),
    ("A100", "bfloat16"): (312e12, "NVIDIA A100 spec sheet, BF16 dense"),
    ("A100", "float32"): (156e12, "NVIDIA A100 spec sheet, TF32 dense"),
    # TPUs run float32 matmuls as bf16 passes at XLA's default precision.
    ("TPU v4", "bfloat16"): (275e12, "Google Cloud TPU v4 spec, BF16"),
    ("TPU v4", "float32"): (275e12, "Google Cloud TPU v4 spec, BF16"),
    ("TPU v5 lite", "bfloat16"): (197e12, "Google Cloud TPU v5e spec, BF16"),
    ("TPU v5 lite", "float32"): (197e12, "Google Cloud TPU v5e spec, BF16"),
    ("TPU v5", "bfloat16"): (459e12, "Google Cloud TPU v5p spec, BF16"),
    ("TPU v5", "float32"): (459e12, "Google Cloud TPU v5p spec, BF16"),
    ("TPU v6 lite", "bfloat16"): (918e12, "Google Cloud TPU v6e (Trillium) spec, BF16"),
    ("TPU v6 lite", "float32"): (918e12, "Google Cloud TPU v6e (Trillium) spec, BF16"),
}


def published_peak_flops(device_kind: str, dtype: str) -> tuple[float, str] | None:
    """(peak FLOP/s, source) of one accelerator chip for `dtype` matmuls, or None if not in the table.

    device_kind: jax's `Device.device_kind` (e.g. "NVIDIA H100 80GB HBM3", "TPU v4"); the
    first table entry whose name it contains wins, so the more specific names come first.
    """
    for (name, entry_dtype), value in PUBLISHED_PEAK_FLOPS.items():
        if name in device_kind and entry_dtype == dtype:
            return value
    return None


def matmul_params_per_token(model_cfg: Mapping[str, Any], seq_len: int, scored_positions: int) -> float:
    """N: the matmul weights one token goes through, on average over the T positions of a row.

    model_cfg: flaxlm's model config (arch, hidden_size, num_layers, mlp_dim, vocab_size, and for
    BERT pair_head, embedding_size and sbo_positions). scored_positions: positions per row that go
    through the vocabulary projection: BERT's `max_predictions` (the head runs on the gathered masked
    positions only), GPT's T. Per-row work (BERT's pooler and pair head) is spread over the row's T
    tokens. SpanBERT's SBO head (sbo_positions > 0) runs on the same scored positions: its two dense
    layers (3D -> D, D -> E) and the tied vocabulary projection once more.
    Biases, LayerNorm and the embedding lookups are not matmuls and are left out.
    """
    d, f, v = model_cfg["hidden_size"], model_cfg["mlp_dim"], model_cfg["vocab_size"]
    e = model_cfg.get("embedding_size") or d  # E: ALBERT's factorised embedding width
    blocks = model_cfg["num_layers"] * (4 * d * d + 2 * d * f)  # q, k, v, out; fc_in, fc_out
    if model_cfg.get("embedding_size"):
        blocks += e * d  # embedding_projection, at every position
    scored = scored_positions / seq_len
    head = v * e * scored  # the tied vocabulary projection
    if model_cfg.get("generator_size"):  # ELECTRA: the discriminator's RTD head; the generator as a BERT
        g = model_cfg["generator_size"]
        gd, gf = round(g * d), round(g * f)
        generator = model_cfg["num_layers"] * (4 * gd * gd + 2 * gd * gf) + e * gd  # blocks, projection
        return blocks + d * d + d + generator + (v * e + gd * e) * scored
    if model_cfg["arch"] == "bert":
        head += d * e * scored  # mlm_transform
        head += d * d / seq_len  # pooler, on [CLS]
        if model_cfg.get("pair_head", True):
            head += 2 * d / seq_len
        if model_cfg.get("sbo_positions"):
            head += (3 * d * d + d * e + v * e) * scored  # sbo_dense_1, sbo_dense_2, vocabulary projection
    return blocks + head


def train_flops_per_token(model_cfg: Mapping[str, Any], seq_len: int, scored_positions: int) -> float:
    """Model FLOPs of one train step (forward + backward) per token: 6 N + 12 L D T (module docstring)."""
    n = matmul_params_per_token(model_cfg, seq_len, scored_positions)
    width = model_cfg["hidden_size"] + round(model_cfg.get("generator_size", 0) * model_cfg["hidden_size"])
    return 6 * n + 12 * model_cfg["num_layers"] * width * seq_len  # ELECTRA: both stacks' attention
