"""ELECTRA (Clark et al., 2020): an MLM generator and a discriminator trained on replaced-token detection.

generator      BertForPreTraining, config.generator_size times as wide (hidden size, heads, MLP;
               `generator_config`), reading the discriminator's embedding tables and embeddings
               LayerNorm (its own projection E -> its hidden size) -> mlm_logits at the masked positions
  -> sample    one token per masked position from softmax(mlm_logits) (temperature 1), without gradient
  -> discriminator  BertEncoder on the input with the samples in the masked places
  -> RTD head  dense D -> D, activation, dense D -> 1: the logit that each token was replaced

A sample equal to the original token counts as original (label 0), as in the paper. The
discriminator's BertEncoder is `encoder`, as in BertForPreTraining, so fine-tuning and Hugging
Face export (ElectraForPreTraining) read it as they read BERT's; the generator is pretraining-only.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxlm.models import layers
from flaxlm.models.bert import BertEncoder, BertForPreTraining
from flaxlm.models.layers import TransformerConfig


def generator_config(cfg: TransformerConfig) -> TransformerConfig:
    """The generator of discriminator `cfg`: hidden size, heads and MLP scaled by cfg.generator_size.

    Its embeddings are the discriminator's (E = cfg.embedding_dim wide), projected to its hidden size.
    With 64-wide heads this is the ELECTRA code's rule (heads = hidden // 64, MLP = 4 x hidden).
    """
    g = cfg.generator_size
    return dataclasses.replace(
        cfg,
        hidden_size=round(cfg.hidden_size * g),
        num_heads=max(1, round(cfg.num_heads * g)),
        mlp_dim=round(cfg.mlp_dim * g),
        embedding_size=cfg.embedding_dim,
        pooler=False,
        pair_head=False,
        sbo_positions=0,
        generator_size=0.0,
    )


def _row_keys(key: jax.Array, input_ids_BT: jax.Array) -> jax.Array:
    """One sampling key per row: `key` folded with a hash of the row's tokens.

    The samples of a row then depend on the row, not on where it sits in the batch, so one
    device, the mesh, pmap's shards and gradient-accumulation microbatches draw the same ones.
    """
    t = input_ids_BT.shape[1]
    mult_T = jnp.arange(t, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    hash_B = jnp.sum(input_ids_BT.astype(jnp.uint32) * mult_T, axis=1, dtype=jnp.uint32)
    return jax.vmap(jax.random.fold_in, (None, 0))(key, hash_B)


class ElectraForPreTraining(nn.Module):
    """Generator + discriminator; `config` is the discriminator's (config.generator_size > 0)."""

    config: TransformerConfig

    def setup(self):
        cfg = self.config
        self.encoder = BertEncoder(cfg)  # the discriminator
        self.generator = BertForPreTraining(generator_config(cfg), shared_embeddings=self.encoder)
        self.rtd_dense = layers.dense(cfg, cfg.hidden_size, "rtd_dense")
        self.rtd_head = layers.dense(cfg, 1, "rtd_head")

    def discriminate(
        self, input_ids, token_type_ids, segment_ids, positions, *, deterministic: bool
    ) -> tuple[jax.Array, jax.Array]:
        """int32 [B, T] inputs (as BertEncoder) -> (rtd_logits_BT, hidden_BTD): HF's ElectraForPreTraining."""
        hidden_BTD, _ = self.encoder(
            input_ids, token_type_ids, segment_ids, positions, deterministic=deterministic
        )
        h_BTD = layers.ACTIVATIONS[self.config.activation](self.rtd_dense(hidden_BTD))
        return self.rtd_head(h_BTD)[..., 0], hidden_BTD

    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        mlm_positions: jax.Array | None = None,
        mlm_targets: jax.Array | None = None,
        mlm_weights: jax.Array | None = None,
        *,
        deterministic: bool,
    ) -> dict[str, jax.Array]:
        """Masked inputs -> dict of outputs.

        input_ids [B, T] with the MLM masking applied; mlm_positions, mlm_targets (the original
        tokens), mlm_weights (1 real, 0 padding of P): [B, P], as for BERT's MLM. Returns
        mlm_logits [B, P, V] (the generator's), rtd_logits [B, T] (the discriminator's on the
        sampled input), rtd_labels [B, T] (1.0 where the sample differs from the original) and
        hidden [B, T, D]. Without mlm_positions (inference): the discriminator on input_ids alone,
        rtd_logits and hidden. Samples draw on the "sample" rng when given (training), else a
        fixed key (evaluation: the same corruption every time).
        """
        if mlm_positions is None:
            rtd_logits_BT, hidden_BTD = self.discriminate(
                input_ids, token_type_ids, segment_ids, positions, deterministic=deterministic
            )
            return dict(rtd_logits=rtd_logits_BT, hidden=hidden_BTD)

        mlm_logits_BPV = self.generator(
            input_ids, token_type_ids, segment_ids, positions, mlm_positions, deterministic=deterministic
        )["mlm_logits"]

        key = self.make_rng("sample") if self.has_rng("sample") else jax.random.key(0)
        logits_BPV = jax.lax.stop_gradient(mlm_logits_BPV).astype(jnp.float32)
        sampled_BP = jax.vmap(jax.random.categorical)(_row_keys(key, input_ids), logits_BPV)

        # Scatter the samples into the sequence as a [B, P, T] match (no scatter op: padding of P
        # may repeat a position, and a scatter's result with duplicates is unspecified).
        t = input_ids.shape[1]
        hit_BPT = (mlm_positions[:, :, None] == jnp.arange(t)) & (mlm_weights[:, :, None] > 0)
        masked_BT = jnp.any(hit_BPT, axis=1)
        sampled_BT = jnp.sum(jnp.where(hit_BPT, sampled_BP[:, :, None], 0), axis=1)
        original_BT = jnp.sum(jnp.where(hit_BPT, mlm_targets[:, :, None], 0), axis=1)
        corrupted_BT = jnp.where(masked_BT, sampled_BT, input_ids).astype(input_ids.dtype)

        rtd_logits_BT, hidden_BTD = self.discriminate(
            corrupted_BT, token_type_ids, segment_ids, positions, deterministic=deterministic
        )
        return dict(
            mlm_logits=mlm_logits_BPV,
            rtd_logits=rtd_logits_BT,
            rtd_labels=(masked_BT & (sampled_BT != original_BT)).astype(jnp.float32),
            hidden=hidden_BTD,
        )
