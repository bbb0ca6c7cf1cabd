"""Transformer pieces shared by the BERT encoder, the GPT decoder and T5's encoder-decoder.

Shape suffixes used across `flaxlm.models`:
  B: batch size             T: sequence length (queries)   S: key length
  D: hidden size            N: attention heads             H: head size (D // N)
  F: MLP hidden size        V: vocabulary size             P: gathered MLM positions
  E: embedding size (ALBERT's factorised embeddings; E = D without them)
"""

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.parallel import BATCH_AXES


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of one Transformer stack; defaults are BERT-base.

    Frozen (hence hashable) so it can be a static Module attribute and a jit
    static argument.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    max_len: int = 512  # Positions per sequence; the position table has max_len + position_offset rows.
    # RoBERTa (fairseq): position p reads row p + position_offset of the table. HF RoBERTa numbers the
    # real tokens from padding_idx + 1 (2 for roberta-base), so its table's first rows are never read;
    # keeping them lets an imported table map exactly. 0: BERT / GPT-2, row p.
    position_offset: int = 0
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    pre_ln: bool = False  # False: BERT's post-LN blocks; True: GPT-2's pre-LN.
    position_embedding: str = "learned"  # "learned" | "sinusoidal" (no params).
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"  # "gelu" (exact erf, BERT) | "gelu_tanh" (GPT-2).
    initializer_range: float = 0.02
    # "normal": every weight N(0, initializer_range) (BERT, GPT-2). "t5": T5's fan-in scaled normals
    # (Mesh TensorFlow T5, T5X, HF's T5 _init_weights): embeddings N(0, 1), a kernel N(0, fan_in^-0.5),
    # the query N(0, (D * H)^-0.5) as T5 folds the unscaled q.k's 1/sqrt(H) into it. With the tied
    # output's D^-0.5 rescale, T5's output logits need unit-scale embeddings: under "normal" they start
    # 1/sqrt(D) times smaller and a small T5 stays near the unigram model for hundreds of steps.
    init: str = "normal"
    # Autoregressive decoding: attention keeps keys/values in the "cache" collection (see
    # MultiHeadAttention); inference only, the params are those of decode=False.
    decode: bool = False
    dtype: Any = jnp.float32  # Compute dtype.
    param_dtype: Any = jnp.float32
    pair_head: bool = True  # BERT: build the 2-way NSP/SOP head on [CLS].
    pooler: bool = True  # BERT: build the tanh pooler on [CLS] (HF BertForMaskedLM has none).
    remat: bool = False  # Recompute each block in the backward pass.
    adapter_dim: int = 0  # > 0: a bottleneck Adapter of this width after attention and after the MLP.
    # Prompt tuning (Lester et al., 2021): > 0 prepends this many learned vectors ("soft_prompt", in
    # the word-embedding space, no position embedding) to the input of BERT, GPT and T5's encoder;
    # the stack returns the real tokens' states only. See `SoftPrompt`.
    prompt_length: int = 0
    # Prefix tuning (Li & Liang, 2021): > 0 gives every self-attention this many learned key and value
    # vectors per head ("prefix_key", "prefix_value"), visible to every real query. See
    # MultiHeadAttention.
    prefix_length: int = 0
    # "xla": the einsum + softmax of `dot_product_attention` below; "dot_product":
    # jax.nn.dot_product_attention (cuDNN flash attention on GPU, XLA elsewhere), which has no
    # attention dropout, so it needs attention_dropout_rate=0.
    attention: str = "xla"
    # ALBERT (Lan et al., 2020), BERT only. embedding_size > 0: factorised embeddings, E wide, projected
    # to D by `embedding_projection` (present even when E == D, as in HF Albert); the MLM head maps D
    # back to E before the tied E -> V projection. 0: BERT's D-wide embeddings, no projection.
    embedding_size: int = 0
    # Cross-layer parameter sharing: "none"; "all" (one block's weights in every layer, ALBERT's
    # default); "attention" / "ffn" (only the attention / MLP sublayer with its LayerNorm shared).
    share_layers: str = "none"
    # SpanBERT (BERT only): > 0 builds the span-boundary-objective head, whose table of offsets within a
    # span has this many rows (the trainer sets it to data.max_predictions, the longest span). 0: none.
    sbo_positions: int = 0
    # T5 (Raffel et al., 2020) switches; the defaults are BERT's / GPT-2's. norm: "layer" (LayerNorm)
    # | "rms" (T5's RMS norm: scale, no bias, no mean). use_bias: biases in the Dense layers.
    norm: str = "layer"
    use_bias: bool = True
    scale_attention: bool = True  # q.k / sqrt(H); T5 leaves it out (its initialisation absorbs it)
    head_dim: int = 0  # H; 0: hidden_size // num_heads (T5's d_kv may differ, so N * H != D)
    gated_mlp: bool = False  # fc_out(act(fc_in(x)) * fc_linear(x)): T5.1.1's gated GELU with gelu_tanh
    # position_embedding="relative" (T5): a learned per-head bias on the attention logits, indexed by
    # the bucket of key position - query position (log-spaced beyond half the buckets, the last bucket
    # for distances >= max_distance); one table per stack, shared by its layers.
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    num_decoder_layers: int = 0  # T5's decoder depth; 0: num_layers
    # T5: the output projection is the shared embedding (and the decoder output is scaled by D^-0.5
    # first, as in Mesh TensorFlow), or False: a separate lm_head (T5.1.1).
    tie_embeddings: bool = True
    # ELECTRA (Clark et al. 2020; BERT only): > 0 builds ElectraForPreTraining, this config being its
    # discriminator and its generator this fraction of the width (hidden_size, num_heads, mlp_dim;
    # `generator_config`). 0: no generator.
    generator_size: float = 0.0

    def __post_init__(self):
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"position_embedding={self.position_embedding!r}; expected one of {POSITION_EMBEDDINGS}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r}; expected one of {NORMS}")
        if self.head_dim < 0 or self.num_decoder_layers < 0:
            raise ValueError("head_dim and num_decoder_layers must be >= 0 (0: the default)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if self.pair_head and not self.pooler:
            raise ValueError("pair_head=True needs pooler=True: the NSP/SOP head reads the pooled [CLS]")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention={self.attention!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
        if self.attention == "dot_product" and self.attention_dropout_rate > 0.0:
            raise ValueError(
                "attention='dot_product' has no attention dropout; set attention_dropout_rate=0 "
                "or attention='xla'"
            )
        if self.share_layers not in SHARE_LAYERS:
            raise ValueError(f"share_layers={self.share_layers!r}; expected one of {SHARE_LAYERS}")
        if self.embedding_size < 0:
            raise ValueError(
                f"embedding_size={self.embedding_size} must be >= 0 (0: hidden_size, no projection)"
            )
        if self.position_offset < 0:
            raise ValueError(f"position_offset={self.position_offset} must be >= 0 (0: BERT, 2: RoBERTa)")
        if self.sbo_positions < 0:
            raise ValueError(f"sbo_positions={self.sbo_positions} must be >= 0 (0: no SBO head)")
        if self.init not in ("normal", "t5"):
            raise ValueError(f"init={self.init!r} is unknown; choose 'normal' (BERT, GPT-2) or 't5'")
        if self.prompt_length < 0 or self.prefix_length < 0:
            raise ValueError("prompt_length and prefix_length must be >= 0 (0: none)")
        if not 0.0 <= self.generator_size <= 1.0:
            raise ValueError(f"generator_size={self.generator_size} must be in (0, 1] (0: no generator)")

    @property
    def embedding_dim(self) -> int:
        """E: the width of the embedding tables and of the MLM head's output (D without factorisation)."""
        return self.embedding_size or self.hidden_size

    @property
    def head_size(self) -> int:
        """H: the width of one attention head (head_dim, or D // N)."""
        return self.head_dim or self.hidden_size // self.num_heads


POSITION_EMBEDDINGS = ("learned", "sinusoidal", "relative")
NORMS = ("layer", "rms")
SHARE_LAYERS = ("none", "all", "attention", "ffn")


ATTENTION_IMPLEMENTATIONS = ("xla", "dot_product")

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def init_normal(config: TransformerConfig, t5_std: float) -> Callable:
    """N(0, config.initializer_range), or N(0, t5_std) under config.init == "t5"."""
    return nn.initializers.normal(t5_std if config.init == "t5" else config.initializer_range)


def dense(config: TransformerConfig, features: int, name: str, fan_in: int = 0) -> nn.Dense:
    """A Dense layer with BERT/GPT-2 initialisation, or T5's N(0, fan_in^-0.5) (fan_in 0: hidden_size)
    under config.init == "t5"; with a bias unless config.use_bias is False (T5)."""
    return nn.Dense(
        features,
        use_bias=config.use_bias,
        kernel_init=init_normal(config, (fan_in or config.hidden_size) ** -0.5),
        bias_init=nn.initializers.zeros,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        name=name,
    )


def layer_norm(config: TransformerConfig, name: str) -> nn.Module:
    """LayerNorm, or T5's RMS norm (x / rms(x) * scale, no bias) if config.norm == "rms"."""
    # flax computes the mean/variance in float32 even when dtype is bf16.
    if config.norm == "rms":
        return nn.RMSNorm(
            epsilon=config.layer_norm_eps, dtype=config.dtype, param_dtype=config.param_dtype, name=name
        )
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        name=name,
    )


def embed(config: TransformerConfig, num_embeddings: int, name: str) -> nn.Embed:
    """A [num_embeddings, E] table (E = config.embedding_dim); N(0, 1) under config.init == "t5"."""
    return nn.Embed(
        num_embeddings,
        config.embedding_dim,
        embedding_init=init_normal(config, 1.0),
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        name=name,
    )


def sinusoidal_table(max_len: int, dim: int) -> np.ndarray:
    """Fixed [max_len, dim] table of Vaswani et al. (sin on even, cos on odd)."""
    position_L1 = np.arange(max_len, dtype=np.float64)[:, None]
    inv_freq = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
    table_LD = np.zeros((max_len, dim), dtype=np.float32)
    table_LD[:, 0::2] = np.sin(position_L1 * inv_freq)
    table_LD[:, 1::2] = np.cos(position_L1 * inv_freq[: dim // 2])
    return table_LD


class PositionEmbedding(nn.Module):
    """positions_BT (index within each document) -> embeddings_BTE (E = config.embedding_dim).

    Position p reads row p + config.position_offset of a [max_len + position_offset, E] table.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, positions_BT: jax.Array) -> jax.Array:
        cfg = self.config
        rows = cfg.max_len + cfg.position_offset
        if cfg.position_embedding == "learned":
            # A bare param (not nn.Embed) so its path mirrors word_embeddings/embedding.
            table_LD = self.param(
                "embedding",
                nn.initializers.normal(cfg.initializer_range),
                (rows, cfg.embedding_dim),
                cfg.param_dtype,
            )
        else:
            table_LD = jnp.asarray(sinusoidal_table(rows, cfg.embedding_dim))
        if cfg.position_offset:
            positions_BT = positions_BT + cfg.position_offset
        return jnp.take(table_LD, positions_BT, axis=0).astype(cfg.dtype)


def relative_position_bucket(
    relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """T5's bucket (int32, in [0, num_buckets)) of each key position - query position.

    Bidirectional (encoder): half the buckets for keys after the query, half for keys at or before
    it; causal (decoder): keys after the query are bucket 0. Within a half, distances below half its
    buckets get a bucket each; larger ones share log-spaced buckets up to max_distance, and all
    beyond it the last. The float32 arithmetic follows Mesh TensorFlow's (and HF's) step by step,
    so bucket edges agree with checkpoints trained there.
    """
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    # log(0) is never selected below; max() only keeps it from producing -inf.
    log_ratio = jnp.log(jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact)
    scaled = log_ratio / np.float32(np.log(max_distance / max_exact)) * (num_buckets - max_exact)
    large = jnp.minimum(max_exact + scaled.astype(distance.dtype), num_buckets - 1)
    return buckets + jnp.where(distance < max_exact, distance, large)


class RelativePositionBias(nn.Module):
    """T5's learned attention bias: positions_q_BT, positions_k_BS -> bias_BNTS.

    One [num_buckets, N] table ("embedding"); entry [bucket(k - q), n] is added to head n's logit of
    query q for key k. Positions are indices within each packed document, so the bias is the same
    whatever the packing (cross-document pairs are masked anyway).
    """

    config: TransformerConfig
    bidirectional: bool

    @nn.compact
    def __call__(self, positions_q_BT: jax.Array, positions_k_BS: jax.Array) -> jax.Array:
        cfg = self.config
        table_KN = self.param(
            "embedding",
            init_normal(cfg, cfg.hidden_size**-0.5),
            (cfg.relative_attention_num_buckets, cfg.num_heads),
            cfg.param_dtype,
        )
        relative_BTS = positions_k_BS[:, None, :] - positions_q_BT[:, :, None]
        buckets_BTS = relative_position_bucket(
            relative_BTS,
            bidirectional=self.bidirectional,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
        )
        bias_BTSN = jnp.take(table_KN, buckets_BTS, axis=0)
        return jnp.transpose(bias_BTSN, (0, 3, 1, 2)).astype(jnp.float32)


def dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Inverted dropout: zeroes each element with probability `rate`, scales the others up.

    Each 32-bit random word decides two elements by 16 bits each, half the threefry work of
    `jax.random.bernoulli` (which spends a word per element; on a CPU that work is a few
    percent of a BERT step). `rate` is thus rounded to a multiple of 1/65536 and the kept
    elements are divided by the exact keep probability, so the expectation is unchanged.
    """
    drop = round(rate * 65536)
    *lead, last = x.shape
    if last % 2:
        bits_X = jax.random.bits(rng, x.shape, jnp.uint16)
    else:  # [..., last / 2] words -> [..., last / 2, 2] halves; the leading axes keep their sharding
        bits_X = jax.lax.bitcast_convert_type(
            jax.random.bits(rng, (*lead, last // 2), jnp.uint32), jnp.uint16
        )
        bits_X = bits_X.reshape(x.shape)
    keep_prob = 1.0 - drop / 65536
    return jnp.where(bits_X >= drop, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
    """`dropout` as a layer, drawing from the "dropout" rng (as nn.Dropout, which it replaces)."""

    rate: float
    deterministic: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0.0:
            return x
        return dropout(x, self.rate, self.make_rng("dropout"))


def make_attention_mask(
    segment_ids_BT: jax.Array, causal: bool, prefix_BT: jax.Array | None = None
) -> jax.Array:
    """Boolean mask_B1TT: query i sees key j iff seg[i] == seg[j] != 0 (and j <= i, or j in the prefix).

    Packed documents never attend to each other and padding (segment 0) attends
    to nothing; such rows are handled in `dot_product_attention`.
    prefix_BT (a prefix LM, causal only): nonzero at each document's first positions, its prefix,
    which every query of the document sees, so the prefix attends to itself bidirectionally and
    the rest causally. None: the plain causal mask.
    """
    seg_q_BT1 = segment_ids_BT[:, :, None]
    seg_k_B1T = segment_ids_BT[:, None, :]
    mask_BTT = (seg_q_BT1 == seg_k_B1T) & (seg_k_B1T != 0)
    if causal:
        t = segment_ids_BT.shape[1]
        visible_BTT = jnp.tril(jnp.ones((t, t), dtype=jnp.bool_))
        if prefix_BT is not None:
            visible_BTT = visible_BTT | (prefix_BT != 0)[:, None, :]
        mask_BTT &= visible_BTT
    return mask_BTT[:, None, :, :]


def cross_attention_mask(segment_ids_q_BT: jax.Array, segment_ids_k_BS: jax.Array) -> jax.Array:
    """Boolean mask_B1TS of decoder queries over encoder keys: seg_q[i] == seg_k[j] != 0.

    Packed example k of the decoder sees packed example k of the encoder only.
    """
    seg_k_B1S = segment_ids_k_BS[:, None, :]
    return ((segment_ids_q_BT[:, :, None] == seg_k_B1S) & (seg_k_B1S != 0))[:, None, :, :]


class SoftPrompt(nn.Module):
    """Prompt tuning's soft prompt (Lester et al., 2021): table_VE -> prompt_PE (P = config.prompt_length).

    P learned vectors in the word-embedding space (E wide), initialised as copies of P random rows of
    table_VE, the model's word embeddings (Lester et al.'s best init): at fine-tuning time these are the
    pretrained rows. The caller embeds them as tokens without a position and prepends them
    (`prepend_prompt`).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, table_VE: jax.Array) -> jax.Array:
        cfg = self.config

        def init(rng, shape, dtype):
            rows_P = jax.random.randint(rng, shape[:1], 0, table_VE.shape[0])
            return jnp.take(table_VE, rows_P, axis=0).astype(dtype)

        return self.param("embedding", init, (cfg.prompt_length, table_VE.shape[1]), cfg.param_dtype)


def prepend_prompt(
    prompt_PD: jax.Array, x_BTD: jax.Array, segment_ids_BT: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(x_B(P+T)D, segment_ids_B(P+T)): the prompt before every row, in the row's first document.

    The prompt positions take the segment id of the row's first real token (0 for an all-padding
    row), so they attend within that document, which attends to them; later packed documents
    never see them (prompt tuning is for one example per row).
    """
    b, p = x_BTD.shape[0], prompt_PD.shape[0]
    first_B = jnp.take_along_axis(segment_ids_BT, jnp.argmax(segment_ids_BT != 0, axis=1)[:, None], axis=1)
    segment_ids_BT = jnp.concatenate([jnp.broadcast_to(first_B, (b, p)), segment_ids_BT], axis=1)
    prompt_BPD = jnp.broadcast_to(prompt_PD.astype(x_BTD.dtype)[None], (b, *prompt_PD.shape))
    return jnp.concatenate([prompt_BPD, x_BTD], axis=1), segment_ids_BT


def decode_mask(
    module: nn.Module, segment_ids_BT: jax.Array, positions_BT: jax.Array | None = None
) -> tuple[jax.Array, jax.Array | None]:
    """(mask_B1TS, positions_BS) of T new decoder tokens over the cache slots; call in a compact method.

    New token t (slot index + t) sees written slot s <= index + t of its own segment. Keeps the
    slots' segment ids (and, given positions_BT, their positions, for a relative position bias)
    in `module`'s "cache" collection; unwritten slots hold segment 0 (padding), so they are never
    seen. On the init call: the ordinary causal mask over the T tokens and their own positions.
    """
    initialized = module.has_variable("cache", "segment_ids")
    segments_BS = module.variable("cache", "segment_ids", jnp.zeros, segment_ids_BT.shape, jnp.int32)
    index = module.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    slot_positions = None
    if positions_BT is not None:
        slot_positions = module.variable("cache", "positions", jnp.zeros, positions_BT.shape, jnp.int32)
    if not initialized:
        return make_attention_mask(segment_ids_BT, causal=True), positions_BT
    t = segment_ids_BT.shape[1]
    segments_BS.value = jax.lax.dynamic_update_slice(
        segments_BS.value, segment_ids_BT.astype(jnp.int32), (0, index.value)
    )
    positions_BS = None
    if slot_positions is not None:
        slot_positions.value = jax.lax.dynamic_update_slice(
            slot_positions.value, positions_BT.astype(jnp.int32), (0, index.value)
        )
        positions_BS = slot_positions.value
    seg_k_B1S = segments_BS.value[:, None, :]
    slot_1S = jnp.arange(seg_k_B1S.shape[-1])[None, :]
    query_slot_T1 = index.value + jnp.arange(t)[:, None]
    mask_BTS = (segment_ids_BT[:, :, None] == seg_k_B1S) & (seg_k_B1S != 0) & (slot_1S <= query_slot_T1)
    index.value = index.value + t
    return mask_BTS[:, None, :, :], positions_BS


def dot_product_attention(
    q_BTNH: jax.Array,
    k_BSNH: jax.Array,
    v_BSNH: jax.Array,
    mask_B1TS: jax.Array,
    *,
    bias_BNTS: jax.Array | None = None,
    scale: bool = True,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """softmax(q k^T / sqrt(H) + bias + mask) v -> out_BTNH, in q's dtype.

    This is attention="xla"; `fused_dot_product_attention` is attention="dot_product".
    bias_BNTS (T5's relative position bias; any leading dims that broadcast) is added to the
    logits; scale=False leaves out the 1 / sqrt(H) (T5).
    Logits and softmax are float32 even for bf16 inputs. Masked logits get the
    most negative finite float rather than -inf, so a fully masked (padding)
    query row gets a uniform, finite distribution instead of NaN.
    Attention dropout is applied when `dropout_rng` is given.
    """
    dtype = q_BTNH.dtype
    head_dim = q_BTNH.shape[-1]
    logits_BNTS = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BSNH, preferred_element_type=jnp.float32)
    if scale:
        logits_BNTS = logits_BNTS / np.sqrt(head_dim).astype(np.float32)
    if bias_BNTS is not None:
        logits_BNTS = logits_BNTS + bias_BNTS.astype(jnp.float32)
    logits_BNTS = jnp.where(mask_B1TS, logits_BNTS, jnp.finfo(jnp.float32).min)
    probs_BNTS = jax.nn.softmax(logits_BNTS, axis=-1)
    if dropout_rng is not None and dropout_rate > 0.0:
        probs_BNTS = dropout(probs_BNTS, dropout_rate, dropout_rng)
    return jnp.einsum("bnts,bsnh->btnh", probs_BNTS.astype(dtype), v_BSNH)


def _cudnn_applies(q_BTNH: jax.Array) -> bool:
    """Whether cuDNN flash attention takes these queries: a GPU, 16-bit floats, head size <= 128, % 8."""
    head_dim = q_BTNH.shape[-1]
    return (
        jax.default_backend() == "gpu"
        and q_BTNH.dtype in (jnp.bfloat16, jnp.float16)
        and head_dim <= 128
        and head_dim % 8 == 0
    )


def fused_dot_product_attention(
    q_BTNH: jax.Array,
    k_BSNH: jax.Array,
    v_BSNH: jax.Array,
    mask_B1TS: jax.Array,
    *,
    causal: bool,
    bias_BNTS: jax.Array | None = None,
    scale: bool = True,
) -> jax.Array:
    """`jax.nn.dot_product_attention` with our mask -> out_BTNH, in q's dtype (no dropout).

    cuDNN flash attention where it applies (see `_cudnn_applies`), XLA otherwise (jax's
    `implementation=None` always means XLA). `causal` lets cuDNN skip the blocks above the
    diagonal; the mask already holds the causal part, so XLA gets the same numbers either way.
    XLA fills masked logits with a large finite negative number, so a fully masked (padding)
    query row is uniform and finite, as in `dot_product_attention`; cuDNN adds the mask as
    that number as a bias, with the same effect. bias_BNTS and scale as in `dot_product_attention`.
    """
    kwargs = dict(mask=mask_B1TS, bias=None if bias_BNTS is None else bias_BNTS.astype(q_BTNH.dtype))
    if not scale:
        kwargs["scale"] = 1.0
    if _cudnn_applies(q_BTNH):
        try:
            return jax.nn.dot_product_attention(
                q_BTNH, k_BSNH, v_BSNH, is_causal=causal, implementation="cudnn", **kwargs
            )
        except (NotImplementedError, ValueError, RuntimeError) as e:  # an older GPU or cuDNN, an odd shape
            logging.getLogger(__name__).info("cuDNN attention does not apply (%s); using XLA's", e)
    return jax.nn.dot_product_attention(q_BTNH, k_BSNH, v_BSNH, implementation="xla", **kwargs)


class MultiHeadAttention(nn.Module):
    """Self-attention x_BTD, mask_B1TT -> y_BTD; cross-attention with kv_BSD (queries from x, keys from kv).

    q/k/v are separate [D, N*H] Dense layers and out [N*H, D] (N*H = D unless config.head_dim),
    with bias unless config.use_bias is False (as in BERT; GPT-2's fused c_attn splits into them),
    so weight conversion and sharding rules address them by name. bias_BNTS (T5's relative position
    bias) is added to the logits. In decode mode only self-attention caches keys/values.
    """

    config: TransformerConfig
    causal: bool = False  # mask_B1TT is causal (a hint for cuDNN; the mask is what counts)

    @nn.compact
    def __call__(
        self,
        x_BTD: jax.Array,
        mask_B1TT: jax.Array,
        deterministic: bool,
        bias_BNTS: jax.Array | None = None,
        kv_BSD: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        b, t, d = x_BTD.shape
        n, h = cfg.num_heads, cfg.head_size
        cross = kv_BSD is not None
        kv_BSD = kv_BSD if cross else x_BTD
        s_ = kv_BSD.shape[1]
        # T5 folds the unscaled q.k's 1/sqrt(H) into the query's init: N(0, (D * H)^-0.5).
        q_BTNH = dense(cfg, n * h, "query", fan_in=d * h)(x_BTD).reshape(b, t, n, h)
        k_BTNH = dense(cfg, n * h, "key", fan_in=kv_BSD.shape[-1])(kv_BSD).reshape(b, s_, n, h)
        v_BTNH = dense(cfg, n * h, "value", fan_in=kv_BSD.shape[-1])(kv_BSD).reshape(b, s_, n, h)
        if cfg.decode and not cross:  # keys/values of every cached slot: the mask is the caller's mask_B1TS
            k_BTNH, v_BTNH = self._decode_cache(k_BTNH, v_BTNH)
        prefix = cfg.prefix_length and not cross
        if prefix:
            k_BTNH, v_BTNH, mask_B1TT, bias_BNTS = self._prefix(k_BTNH, v_BTNH, mask_B1TT, bias_BNTS)
        if cfg.attention == "dot_product":
            # In decode mode the mask is over cache slots, and with a prefix over P more keys, not a
            # square causal one: no cuDNN causal hint.
            causal = self.causal and not cfg.decode and not cross and not prefix
            out_BTNH = fused_dot_product_attention(
                q_BTNH,
                k_BTNH,
                v_BTNH,
                mask_B1TT,
                causal=causal,
                bias_BNTS=bias_BNTS,
                scale=cfg.scale_attention,
            )
        else:
            use_dropout = not deterministic and cfg.attention_dropout_rate > 0.0
            out_BTNH = dot_product_attention(
                q_BTNH,
                k_BTNH,
                v_BTNH,
                mask_B1TT,
                bias_BNTS=bias_BNTS,
                scale=cfg.scale_attention,
                dropout_rate=cfg.attention_dropout_rate,
                dropout_rng=self.make_rng("dropout") if use_dropout else None,
            )
        return dense(cfg, d, "out", fan_in=n * h)(out_BTNH.reshape(b, t, n * h))

    def _prefix(self, k_BSNH, v_BSNH, mask_B1TS, bias_BNTS):
        """Prefix tuning (Li & Liang, 2021): P learned keys and values per head before the S keys.

        prefix_key / prefix_value [P, N, H] are the layer's own (N * H * P each), optimised
        directly, without the paper's MLP reparameterisation. Every query that sees any key (every
        real token) sees the P prefix slots; padding queries see nothing still. The position bias
        (T5) is 0 for them: they have no position. Returns (k_B(P+S)NH, v_B(P+S)NH, mask_B1T(P+S),
        bias_BNT(P+S) or None).
        """
        cfg = self.config
        b, p = k_BSNH.shape[0], cfg.prefix_length
        init = nn.initializers.normal(cfg.initializer_range)
        shape = (p, cfg.num_heads, cfg.head_size)
        prefix_k = self.param("prefix_key", init, shape, cfg.param_dtype).astype(k_BSNH.dtype)
        prefix_v = self.param("prefix_value", init, shape, cfg.param_dtype).astype(v_BSNH.dtype)
        k_BSNH = jnp.concatenate([jnp.broadcast_to(prefix_k[None], (b, *shape)), k_BSNH], axis=1)
        v_BSNH = jnp.concatenate([jnp.broadcast_to(prefix_v[None], (b, *shape)), v_BSNH], axis=1)
        real_B1T1 = jnp.any(mask_B1TS, axis=-1, keepdims=True)
        mask_B1TP = jnp.broadcast_to(real_B1T1, (*mask_B1TS.shape[:-1], p))
        mask_B1TS = jnp.concatenate([mask_B1TP, mask_B1TS], axis=-1)
        if bias_BNTS is not None:
            bias_BNTS = jnp.pad(bias_BNTS, [(0, 0)] * (bias_BNTS.ndim - 1) + [(p, 0)])
        return k_BSNH, v_BSNH, mask_B1TS, bias_BNTS

    def _decode_cache(self, k_BTNH: jax.Array, v_BTNH: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Writes the T new keys/values at slot `cache_index` and returns all S slots (k_BSNH, v_BSNH).

        The cache ("cache" collection: cached_key/cached_value [B, S, N, H], cache_index) is
        created by the init call, whose T sets S; that call attends over its own T tokens only.
        Every row writes at the same slot; the caller's mask hides slots not yet written.
        """
        initialized = self.has_variable("cache", "cached_key")
        key_BSNH = self.variable("cache", "cached_key", jnp.zeros, k_BTNH.shape, k_BTNH.dtype)
        value_BSNH = self.variable("cache", "cached_value", jnp.zeros, v_BTNH.shape, v_BTNH.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        if not initialized:
            return k_BTNH, v_BTNH
        start = (0, index.value, 0, 0)
        key_BSNH.value = jax.lax.dynamic_update_slice(key_BSNH.value, k_BTNH, start)
        value_BSNH.value = jax.lax.dynamic_update_slice(value_BSNH.value, v_BTNH, start)
        index.value = index.value + k_BTNH.shape[1]
        return key_BSNH.value, value_BSNH.value


class Mlp(nn.Module):
    """x_BTD -> fc_in (F) -> activation -> fc_out (D).

    config.gated_mlp (T5.1.1, Shazeer 2020): activation(fc_in(x)) * fc_linear(x) -> fc_out.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        cfg = self.config
        x_BTF = dense(cfg, cfg.mlp_dim, "fc_in")(x_BTD)
        x_BTF = ACTIVATIONS[cfg.activation](x_BTF)
        if cfg.gated_mlp:
            x_BTF = x_BTF * dense(cfg, cfg.mlp_dim, "fc_linear")(x_BTD)
        return dense(cfg, cfg.hidden_size, "fc_out", fan_in=cfg.mlp_dim)(x_BTF)


ADAPTER_UP_INIT_STD = 1e-3  # Small, so a fresh adapter is close to the identity.


class Adapter(nn.Module):
    """Bottleneck adapter (Houlsby et al., 2019): x_BTD + up(activation(down(x_BTD))).

    down: D -> A (= config.adapter_dim), up: A -> D. `up` starts near zero, so
    adding adapters to a pretrained model leaves its outputs nearly unchanged
    until they are trained.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        cfg = self.config
        x_BTA = dense(cfg, cfg.adapter_dim, "down")(x_BTD)
        x_BTA = ACTIVATIONS[cfg.activation](x_BTA)
        up = nn.Dense(
            cfg.hidden_size,
            kernel_init=nn.initializers.normal(ADAPTER_UP_INIT_STD),
            bias_init=nn.initializers.zeros,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            name="up",
        )
        return x_BTD + up(x_BTA)


class TransformerBlock(nn.Module):
    """One attention + MLP block: x_BTD, mask_B1TT -> x_BTD.

    post-LN (BERT):  x = LN(x + drop(attn(x)));  x = LN(x + drop(mlp(x)))
    pre-LN (GPT-2):  x = x + drop(attn(LN(x)));  x = x + drop(mlp(LN(x)))
    Pre-LN stacks need a final LayerNorm after the last block (the caller's).
    bias_BNTT (T5's relative position bias) is added to the self-attention logits.
    With cross_attention (T5's decoder) a cross-attention sublayer over encoded_BSD, masked by
    cross_mask_B1TS, sits between self-attention and the MLP, wrapped like them.
    With config.adapter_dim > 0, an Adapter transforms each sublayer's output
    (after dropout) before the residual sum; otherwise no adapter params exist.
    Cross-layer sharing (ALBERT's "attention" / "ffn"): a sublayer and its
    LayerNorm created once by the caller and given to every block as
    shared_*; their params are the caller's, and this block has none of its own.
    """

    config: TransformerConfig
    causal: bool = False  # passed to MultiHeadAttention
    cross_attention: bool = False
    shared_attention: nn.Module | None = None  # a MultiHeadAttention, with shared_attention_norm
    shared_attention_norm: nn.Module | None = None
    shared_mlp: nn.Module | None = None  # an Mlp, with shared_mlp_norm
    shared_mlp_norm: nn.Module | None = None

    @nn.compact
    def __call__(
        self,
        x_BTD: jax.Array,
        mask_B1TT: jax.Array,
        deterministic: bool,
        bias_BNTT: jax.Array | None = None,
        encoded_BSD: jax.Array | None = None,
        cross_mask_B1TS: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        attention = self.shared_attention or MultiHeadAttention(cfg, causal=self.causal, name="attention")
        mlp = self.shared_mlp or Mlp(cfg, name="mlp")
        attention_norm = self.shared_attention_norm or layer_norm(cfg, "attention_norm")
        mlp_norm = self.shared_mlp_norm or layer_norm(cfg, "mlp_norm")
        dropout = Dropout(cfg.dropout_rate, deterministic=deterministic)
        identity = lambda y_BTD: y_BTD
        attention_adapter = Adapter(cfg, name="attention_adapter") if cfg.adapter_dim else identity
        mlp_adapter = Adapter(cfg, name="mlp_adapter") if cfg.adapter_dim else identity

        def residual(x_BTD, sublayer, norm, adapter):
            if cfg.pre_ln:
                return x_BTD + adapter(dropout(sublayer(norm(x_BTD))))
            return norm(x_BTD + adapter(dropout(sublayer(x_BTD))))

        x_BTD = residual(
            x_BTD,
            lambda y: attention(y, mask_B1TT, deterministic, bias_BNTT),
            attention_norm,
            attention_adapter,
        )
        if self.cross_attention:
            cross = MultiHeadAttention(cfg, name="cross_attention")
            x_BTD = residual(
                x_BTD,
                lambda y: cross(y, cross_mask_B1TS, deterministic, kv_BSD=encoded_BSD),
                layer_norm(cfg, "cross_attention_norm"),
                identity,
            )
        return residual(x_BTD, mlp, mlp_norm, mlp_adapter)


def block_class(config: TransformerConfig) -> type[TransformerBlock]:
    """TransformerBlock, rematerialised if config.remat (saves activation memory)."""
    if config.remat:
        # self is argument 0, so `deterministic` (a Python bool) is argument 3.
        return nn.remat(TransformerBlock, static_argnums=(3,))
    return TransformerBlock


def constrain_batch(x_B: jax.Array) -> jax.Array:
    """x_B... unchanged in value, its batch dim pinned to the mesh's (data, fsdp) axes, the rest replicated.

    Called at block boundaries, so that between blocks XLA keeps activations
    split by batch (and sums tensor-parallel partial results there) whatever
    layout it picks inside a block. A no-op outside a `jax.set_mesh` context
    (the pmap path, a plain `model.apply`) and when the batch does not split
    evenly (init's batch of 1).
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return x_B
    if x_B.shape[0] % int(np.prod([mesh.shape[a] for a in BATCH_AXES])):
        return x_B
    return jax.lax.with_sharding_constraint(x_B, jax.sharding.PartitionSpec(BATCH_AXES))
