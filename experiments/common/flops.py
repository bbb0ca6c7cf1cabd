"""Training FLOPs of a run, counted from the model shape and what the objective scores.

Counts multiply-adds as 2 FLOPs and only the matrix products (the
elementwise work, LayerNorm, softmax and GELU, is a few percent at these
shapes and is left out). The count is per padded sequence: the model
computes every one of the T positions whether it holds a token or padding.

Per sequence, forward (E: ALBERT's factorised embedding width, E = D without it):
  blocks     L · T · (8·D² + 4·D·M)   Q, K, V and output projections, MLP in and out (a block
                                      shared by several layers runs, and counts, in each)
  projection T · 2·E·D                ALBERT's embedding projection E -> D, if factorised
  attention  L · T · 4·T·D            scores QKᵀ and the weighted sum of V (the full T×T,
                                      also for causal masks: flaxlm computes it all)
  MLM head   P · (2·D·E + 2·E·V)      transform and vocabulary projection at the P scored
                                      positions only (flaxlm gathers them first)
  pooler     2·D²                     BERT's [CLS] pooler, always built
  pair head  4·D                      NSP/SOP 2-way classifier, if the objective has one
  SBO head   P · (6·D² + 2·D·E + 2·E·V)  SpanBERT's span-boundary head (mlm_sbo) at the same P
                                      positions: 3D -> D, D -> E, then the vocabulary projection
  causal LM  T · 2·D·V                vocabulary projection at every position (a prefix LM's
                                      too: it computes every position, scoring only some)
  ELECTRA    the generator's blocks, projection E -> G, attention and MLM head as above at its width
             (G = round(g·D), G_M = round(g·M), g = generator_size), plus the discriminator's blocks
             and T · (2·D² + 2·D) for its replaced-token head at every position (no MLM head, no
             pooler); sampling is elementwise and left out
T5 (arch "t5"; inputs S = seq_len, targets T; A = N·H, which T5 lets differ from D; G = 3
matrices in a gated MLP, else 2):
  encoder    L_e · S · (8·D·A + 2·G·D·M) + L_e · 4·S²·A
  decoder    L_d · T · (8·D·A + 2·G·D·M) + L_d · 4·T²·A        self-attention and MLP
             + L_d · (T · 4·D·A + S · 4·D·A + 4·T·S·A)          cross-attention: Q and output at
                                      T, K and V at the S encoder outputs, scores T×S
  output     T · 2·D·V                vocabulary projection at every decoder position
A training step is forward + backward = 3 × forward (the backward pass
costs two matrix products per forward one). This is Kaplan et al.'s 6·N
per token with the attention term and the heads counted where they run.
"""

from flaxlm import objectives
from flaxlm.data import builders


def forward_flops_per_sequence(
    model: dict, objective: str, seq_len: int, max_predictions: int, targets_length: int = 0
) -> int:
    """Forward FLOPs for one sequence of `seq_len` positions. `model` holds config.model's fields.

    T5 (arch "t5"): seq_len encoder positions and targets_length decoder positions.
    """
    if model.get("arch") == "t5":
        if targets_length < 1:
            raise ValueError("arch t5: pass targets_length (the decoder positions)")
        return _t5_forward_flops(model, seq_len, targets_length)
    D, L, M, V, T = (
        model["hidden_size"],
        model["num_layers"],
        model["mlp_dim"],
        model["vocab_size"],
        seq_len,
    )
    E = model.get("embedding_size") or D
    if objective == "electra":
        g = model["generator_size"]
        G, GM = round(g * D), round(g * M)
        generator = L * T * (8 * G * G + 4 * G * GM) + T * 2 * E * G + L * T * 4 * T * G
        generator += max_predictions * (2 * G * E + 2 * E * V)
        discriminator = L * T * (8 * D * D + 4 * D * M) + L * T * 4 * T * D + T * (2 * D * D + 2 * D)
        if model.get("embedding_size"):
            discriminator += T * 2 * E * D
        return generator + discriminator
    blocks = L * T * (8 * D * D + 4 * D * M)
    if model.get("embedding_size"):
        blocks += T * 2 * E * D
    attention = L * T * 4 * T * D
    if objectives.is_decoder_only(objective):
        head = T * 2 * D * V
    else:
        head = max_predictions * (2 * D * E + 2 * E * V) + 2 * D * D
        if objectives.has_pair_head(objective):
            head += 4 * D
        if objectives.has_sbo_head(objective):
            head += max_predictions * (2 * 3 * D * D + 2 * D * E + 2 * E * V)
    return blocks + attention + head


def _t5_forward_flops(model: dict, S: int, T: int) -> int:
    """The T5 rows of the module docstring."""
    D, M, V = model["hidden_size"], model["mlp_dim"], model["vocab_size"]
    A = model["num_heads"] * (model.get("head_dim") or D // model["num_heads"])
    L_e = model["num_layers"]
    L_d = model.get("num_decoder_layers") or L_e
    G = 3 if model.get("gated_mlp") else 2
    encoder = L_e * S * (8 * D * A + 2 * G * D * M) + L_e * 4 * S * S * A
    decoder = L_d * T * (8 * D * A + 2 * G * D * M) + L_d * 4 * T * T * A
    cross = L_d * (T * 4 * D * A + S * 4 * D * A + 4 * T * S * A)
    return encoder + decoder + cross + T * 2 * D * V


def train_flops_per_step(config: dict) -> int:
    """Forward + backward FLOPs of one optimizer step of a resolved config (as a dict)."""
    data = config["data"]
    targets_length = 0
    if config["model"].get("arch") == "t5":
        targets_length = builders.targets_length(
            data["builder"], data["seq_len"], data["noise_density"], data["mean_noise_span_length"]
        )
    per_seq = forward_flops_per_sequence(
        config["model"], config["objective"], data["seq_len"], data["max_predictions"], targets_length
    )
    return 3 * per_seq * config["train"]["batch_size"]


def parameter_count(model: dict, objective: str, max_predictions: int = 0) -> dict[str, int]:
    """Parameters by part: `embedding` (word, position, token type) and `non_embedding` (the rest).

    The output projection is tied to the word embeddings in both BERT and GPT. ALBERT's options:
    embeddings E = embedding_size wide (plus the E -> D projection), and blocks shared across
    layers (share_layers) counted once. mlm_sbo: SpanBERT's head, whose table of offsets has
    max_predictions rows (config.data.max_predictions, the trainer's sbo_positions). electra: the
    discriminator (no pooler, no MLM head; its replaced-token head) plus the generator's own layers,
    projection and MLM head (it reads the discriminator's embeddings, counted once).
    """
    if model.get("arch") == "t5":
        return _t5_parameter_count(model)
    D, L, M, V = model["hidden_size"], model["num_layers"], model["mlp_dim"], model["vocab_size"]
    E = model.get("embedding_size") or D
    gpt = model.get("arch") == "gpt"
    embedding = V * E + model["max_len"] * E * (model.get("position_embedding", "learned") == "learned")
    if not gpt:
        embedding += model.get("type_vocab_size", 2) * E
    attention = 4 * D * D + 4 * D + 2 * D  # q, k, v, out and its LayerNorm
    mlp = 2 * D * M + M + D + 2 * D  # fc_in, fc_out and its LayerNorm
    share = model.get("share_layers", "none")
    layers = {
        "none": L * (attention + mlp),
        "all": attention + mlp,
        "attention": attention + L * mlp,
        "ffn": L * attention + mlp,
    }[share]
    non_embedding = layers + 2 * E  # embedding (or GPT's final) LayerNorm
    if model.get("embedding_size"):
        non_embedding += E * D + D  # embedding_projection
    if objective == "electra":
        g = model["generator_size"]
        G, GM = round(g * D), round(g * M)
        generator = L * (4 * G * G + 4 * G + 2 * G + 2 * G * GM + GM + G + 2 * G)  # its blocks
        generator += E * G + G + G * E + E + 2 * E + V  # projection, MLM transform, LayerNorm, bias
        rtd_head = D * D + D + D + 1
        non_embedding += generator + rtd_head
        return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}
    if not gpt:
        non_embedding += D * D + D  # pooler
        non_embedding += D * E + E + 2 * E + V  # MLM transform, its LayerNorm, output bias
        if objectives.has_pair_head(objective):
            non_embedding += 2 * D + 2
        if objectives.has_sbo_head(objective):
            if max_predictions < 1:
                raise ValueError("objective mlm_sbo: pass max_predictions (the SBO head's offset table rows)")
            non_embedding += max_predictions * D  # offsets within a span
            non_embedding += 3 * D * D + D + 2 * D + D * E + E + 2 * E  # 2 dense layers, their LayerNorms
            non_embedding += V  # its output bias (the projection is the tied word embeddings)
        if model.get("pre_ln"):
            non_embedding += 2 * D  # final LayerNorm
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def _t5_parameter_count(model: dict) -> dict[str, int]:
    """T5's parameters: `embedding` holds the shared word embeddings, the untied lm_head (T5.1.1) and
    the two relative-position-bias tables (encoder's, decoder's); `non_embedding` the blocks and norms."""
    D, M, V, N = model["hidden_size"], model["mlp_dim"], model["vocab_size"], model["num_heads"]
    A = N * (model.get("head_dim") or D // N)
    L_e = model["num_layers"]
    L_d = model.get("num_decoder_layers") or L_e
    G = 3 if model.get("gated_mlp") else 2
    bias = model.get("use_bias", True)
    norm = D if model.get("norm", "layer") == "rms" else 2 * D  # RMS norm: a scale, no bias
    attention = 4 * D * A + (3 * A + D) * bias  # q, k, v [D, A]; out [A, D]
    mlp = G * D * M + ((G - 1) * M + D) * bias  # fc_in (and fc_linear) [D, M]; fc_out [M, D]
    encoder_block = attention + mlp + 2 * norm
    decoder_block = 2 * attention + mlp + 3 * norm  # self- and cross-attention
    non_embedding = L_e * encoder_block + L_d * decoder_block + 2 * norm  # + each stack's final norm
    embedding = V * D + 2 * model.get("relative_attention_num_buckets", 32) * N
    if not model.get("tie_embeddings", True):
        embedding += D * V  # lm_head
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def run_flops(recipe, overrides: dict) -> float:
    """Training FLOPs of all of a runner.Recipe's phases with `overrides` (before any step scaling)."""
    from experiments.common import runner  # runner's configs; imported here, runner needs nothing of ours

    total, prev = 0.0, 0
    for phase in recipe.phases:
        config = runner.resolved_config(recipe.config, {**recipe.overrides, **overrides, **phase})
        steps = int(config.train.num_steps) - prev
        prev = int(config.train.num_steps)
        total += steps * train_flops_per_step(config.to_dict())
    return total


def matched_flops(recipe, variants, reference) -> list:
    """Each runner.Variant with step_scale = FLOPs(reference's run) / FLOPs(its run at the recipe's steps)."""
    import dataclasses

    budget = run_flops(recipe, reference.overrides)
    return [dataclasses.replace(v, step_scale=budget / run_flops(recipe, v.overrides)) for v in variants]
