"""BERT (Devlin et al., 2019): a bidirectional encoder with MLM and NSP/SOP heads.

embeddings (word + token type + position, LayerNorm, dropout)
  -> num_layers post-LN Transformer blocks (pre-LN + final LayerNorm if pre_ln)
  -> pooler (tanh dense on [CLS])
  -> heads: MLM (transform, LayerNorm, tied vocab projection + bias), pair (2-way),
     SpanBERT's span-boundary objective (SBO; Joshi et al. 2020) if config.sbo_positions.

ALBERT (Lan et al., 2020) is this model configured (see TransformerConfig):
embedding_size=E factorises the embeddings (E-wide tables and LayerNorm, then
`embedding_projection` E -> D; the MLM transform maps D -> E, so the tied
projection is E -> V), and share_layers="all" runs one block's weights
num_layers times ("attention" / "ffn" share one sublayer only).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxlm.models import layers
from flaxlm.models.layers import TransformerConfig


class BertEncoder(nn.Module):
    """Token ids -> (hidden_BTD, pooled_BD).

    Written with `setup` so BertForPreTraining can reuse `word_embeddings` for
    its tied output projection. Shared weights (config.share_layers) are
    modules created here once and called by every layer: "all" is one
    `shared_block`; "attention" / "ffn" give `shared_attention` (+ its norm) /
    `shared_mlp` (+ its norm) to every block_i.

    shared_embeddings: another BertEncoder whose embedding tables and embeddings
    LayerNorm this one reads (`embed`, `attend`) instead of having its own, as
    ELECTRA's generator reads the discriminator's (flaxlm.models.electra); its
    config.embedding_size must be that encoder's embedding_dim.
    """

    config: TransformerConfig
    shared_embeddings: "BertEncoder | None" = None

    def setup(self):
        cfg = self.config
        if self.shared_embeddings is None:
            self.word_embeddings = layers.embed(cfg, cfg.vocab_size, "word_embeddings")
            self.token_type_embeddings = layers.embed(cfg, cfg.type_vocab_size, "token_type_embeddings")
            self.position_embeddings = layers.PositionEmbedding(cfg)
            self.embeddings_norm = layers.layer_norm(cfg, "embeddings_norm")
        if cfg.embedding_size:
            self.embedding_projection = layers.dense(cfg, cfg.hidden_size, "embedding_projection")
        if cfg.prompt_length:
            self.soft_prompt = layers.SoftPrompt(cfg, name="soft_prompt")
        self.dropout = layers.Dropout(cfg.dropout_rate)
        block = layers.block_class(cfg)
        if cfg.share_layers == "all":
            self.shared_block = block(cfg, name="shared_block")
        else:
            shared = {}
            if cfg.share_layers == "attention":
                self.shared_attention = layers.MultiHeadAttention(cfg, name="shared_attention")
                self.shared_attention_norm = layers.layer_norm(cfg, "shared_attention_norm")
                shared = dict(
                    shared_attention=self.shared_attention, shared_attention_norm=self.shared_attention_norm
                )
            elif cfg.share_layers == "ffn":
                self.shared_mlp = layers.Mlp(cfg, name="shared_mlp")
                self.shared_mlp_norm = layers.layer_norm(cfg, "shared_mlp_norm")
                shared = dict(shared_mlp=self.shared_mlp, shared_mlp_norm=self.shared_mlp_norm)
            self.blocks = [block(cfg, **shared, name=f"block_{i}") for i in range(cfg.num_layers)]
        if cfg.pre_ln:
            self.final_norm = layers.layer_norm(cfg, "final_norm")
        if cfg.pooler:
            self.pooler = layers.dense(cfg, cfg.hidden_size, "pooler")

    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        *,
        deterministic: bool,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Encodes int32 [B, T] inputs -> (hidden_BTD, pooled_BD).

        segment_ids: 0 = padding, k >= 1 = k-th packed document (attention stays
        within a document). positions: index within the document.
        With config.prompt_length = P the soft prompt runs before token 0 (T + P positions) and
        hidden_BTD has the T real tokens' states only.
        pooled_BD is tanh(dense(hidden at token 0)), i.e. the [CLS] pooler; None
        if not config.pooler.
        """
        tables = self if self.shared_embeddings is None else self.shared_embeddings
        x_BTD = tables.embed(input_ids, token_type_ids, positions)  # x_BTE when factorised
        p = self.config.prompt_length
        if p:
            # Embedded as tokens of type 0 without a position (Lester et al.), before [CLS].
            prompt_PE = self.soft_prompt(tables.word_embeddings.embedding)
            prompt_PE = tables.embeddings_norm(
                prompt_PE + tables.token_type_embeddings(jnp.zeros(p, jnp.int32))
            )
            x_BTD, segment_ids = layers.prepend_prompt(prompt_PE, x_BTD, segment_ids)
        x_BTD = layers.constrain_batch(self.dropout(x_BTD, deterministic=deterministic))
        if self.config.embedding_size:
            # HF Albert projects after the dropout (its embedding_hidden_mapping_in).
            x_BTD = self.embedding_projection(x_BTD)

        mask_B1TT = layers.make_attention_mask(segment_ids, causal=False)
        shared = self.config.share_layers == "all"
        for block in [self.shared_block] * self.config.num_layers if shared else self.blocks:
            x_BTD = layers.constrain_batch(block(x_BTD, mask_B1TT, deterministic))
        x_BTD = x_BTD[:, p:]  # the real tokens' states: [CLS] is token 0 again
        if self.config.pre_ln:
            x_BTD = self.final_norm(x_BTD)

        if not self.config.pooler:
            return x_BTD, None
        pooled_BD = jnp.tanh(self.pooler(x_BTD[:, 0]))
        return x_BTD, pooled_BD

    def embed(self, input_ids: jax.Array, token_type_ids: jax.Array, positions: jax.Array) -> jax.Array:
        """LayerNorm(word + token type + position embeddings) -> x_BTE (before dropout and projection)."""
        x_BTE = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(positions)
        )
        return self.embeddings_norm(x_BTE)

    def attend(self, x_BPE: jax.Array) -> jax.Array:
        """x_BPE @ word_embeddings^T -> logits_BPV (the tied output projection; E = D unless factorised)."""
        tables = self if self.shared_embeddings is None else self.shared_embeddings
        return tables.word_embeddings.attend(x_BPE)


def _gather(x_BTD: jax.Array, positions_BP: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x_BTD, positions_BP[:, :, None], axis=1)


class SpanBoundaryHead(nn.Module):
    """SpanBERT's SBO head: each span token from the span's two boundary tokens and its offset.

    h0 = [x_left; x_right; p_offset] (p: a learned D-wide table of config.sbo_positions rows),
    h1 = LayerNorm(GeLU(W1 h0)), y = LayerNorm(GeLU(W2 h1)): D -> D, then D -> E (E = D unless
    ALBERT-factorised) so y can go through the tied vocabulary projection, as in the SpanBERT
    code (its pair-target head shares the MLM decoder's weights and has a bias of its own).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, hidden_BTD: jax.Array, left_BP: jax.Array, right_BP: jax.Array, offset_BP: jax.Array
    ) -> jax.Array:
        """-> y_BPE, the head's output before the vocabulary projection."""
        cfg = self.config
        act = layers.ACTIVATIONS[cfg.activation]
        position_embeddings = nn.Embed(
            cfg.sbo_positions,
            cfg.hidden_size,
            embedding_init=nn.initializers.normal(cfg.initializer_range),
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            name="sbo_position_embeddings",
        )
        h_BP3D = jnp.concatenate(
            [_gather(hidden_BTD, left_BP), _gather(hidden_BTD, right_BP), position_embeddings(offset_BP)],
            axis=-1,
        )
        h_BPD = layers.layer_norm(cfg, "sbo_norm_1")(
            act(layers.dense(cfg, cfg.hidden_size, "sbo_dense_1")(h_BP3D))
        )
        return layers.layer_norm(cfg, "sbo_norm_2")(
            act(layers.dense(cfg, cfg.embedding_dim, "sbo_dense_2")(h_BPD))
        )


class BertForPreTraining(nn.Module):
    """BertEncoder + MLM head (+ NSP/SOP pair head if config.pair_head, SBO head if config.sbo_positions).

    shared_embeddings: as BertEncoder's (ELECTRA's generator is this model on the discriminator's tables).
    """

    config: TransformerConfig
    shared_embeddings: BertEncoder | None = None

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        mlm_positions: jax.Array | None = None,
        sbo_left: jax.Array | None = None,
        sbo_right: jax.Array | None = None,
        sbo_offset: jax.Array | None = None,
        *,
        deterministic: bool,
        return_hidden: bool = False,
    ) -> dict[str, jax.Array]:
        """int32 [B, T] inputs (as BertEncoder) -> dict of outputs.

        mlm_positions: int32 [B, P] indices into T of the positions to score;
        None scores every position (P = T).
        sbo_left, sbo_right, sbo_offset: int32 [B, P], each predicted position's span boundaries
        (indices into T) and offset in its span (see flaxlm.data.masking); with config.sbo_positions
        they give sbo_logits (None: no SBO output, e.g. at inference; pass them to init).
        Returns mlm_logits [B, P, V], pair_logits [B, 2] (only if
        config.pair_head), sbo_logits [B, P, V] (only with the SBO head and its inputs),
        hidden [B, T, D], pooled [B, D] (only if config.pooler).
        return_hidden: mlm_hidden / sbo_hidden [B, P, E], the heads' inputs to the tied vocabulary
        projection, instead of mlm_logits / sbo_logits (for objectives.chunked_mlm_loss, which projects
        a few positions at a time; `output_projection` gives the projection).
        """
        cfg = self.config
        encoder = BertEncoder(cfg, self.shared_embeddings, name="encoder")
        hidden_BTD, pooled_BD = encoder(
            input_ids, token_type_ids, segment_ids, positions, deterministic=deterministic
        )

        # Gather before the transform and the V-wide projection: on small models
        # with ~15% masking that projection dominates the FLOPs.
        if mlm_positions is None:
            x_BPD = hidden_BTD
        else:
            x_BPD = _gather(hidden_BTD, mlm_positions)
        # D -> E (ALBERT's factorised head; E = D for BERT), then the tied E -> V projection.
        x_BPE = layers.dense(cfg, cfg.embedding_dim, "mlm_transform")(x_BPD)
        x_BPE = layers.ACTIVATIONS[cfg.activation](x_BPE)
        x_BPE = layers.layer_norm(cfg, "mlm_norm")(x_BPE)
        mlm_bias_V = self.param("mlm_bias", nn.initializers.zeros, (cfg.vocab_size,), cfg.param_dtype)
        if return_hidden:
            outputs = dict(mlm_hidden=x_BPE.astype(cfg.dtype), hidden=hidden_BTD)
        else:
            outputs = dict(mlm_logits=encoder.attend(x_BPE) + mlm_bias_V.astype(cfg.dtype), hidden=hidden_BTD)
        if cfg.pooler:
            outputs["pooled"] = pooled_BD
        if cfg.pair_head:
            outputs["pair_logits"] = layers.dense(cfg, 2, "pair_head")(pooled_BD)
        if cfg.sbo_positions and sbo_left is not None:
            y_BPE = SpanBoundaryHead(cfg, name="sbo_head")(hidden_BTD, sbo_left, sbo_right, sbo_offset)
            sbo_bias_V = self.param("sbo_bias", nn.initializers.zeros, (cfg.vocab_size,), cfg.param_dtype)
            if return_hidden:
                outputs["sbo_hidden"] = y_BPE.astype(cfg.dtype)
            else:
                outputs["sbo_logits"] = encoder.attend(y_BPE) + sbo_bias_V.astype(cfg.dtype)
        return outputs


def output_projection(params) -> dict[str, jax.Array]:
    """BertForPreTraining's vocabulary projection: embedding [V, E] (tied to its word embeddings),
    mlm_bias [V] and, with the SBO head, sbo_bias [V]. logits = hidden @ embedding.T + bias."""
    out = {"embedding": params["encoder"]["word_embeddings"]["embedding"], "mlm_bias": params["mlm_bias"]}
    if "sbo_bias" in params:
        out["sbo_bias"] = params["sbo_bias"]
    return out
