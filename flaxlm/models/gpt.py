"""GPT-2 (Radford et al., 2019): a causal decoder-only language model.

embeddings (word + learned position, dropout)
  -> num_layers pre-LN Transformer blocks with a causal, per-document mask
  -> final LayerNorm -> LM head tied to the word embeddings (no bias).
"""

import dataclasses

import flax.linen as nn
import jax

from flaxlm.models import layers
from flaxlm.models.layers import TransformerConfig


class GPTDecoder(nn.Module):
    """Causal LM: int32 [B, T] inputs -> next-token logits_BTV.

    segment_ids: 0 = padding, k >= 1 = k-th packed document; positions: index
    within the document. Query t sees keys s <= t of its own document only.
    Blocks are always pre-LN (GPT-2), whatever config.pre_ln says; there are no
    token-type embeddings.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        *,
        deterministic: bool,
    ) -> jax.Array:
        cfg = self.config
        # GPT-2 blocks are pre-LN; the flag only chooses between BERT variants.
        block_cfg = dataclasses.replace(cfg, pre_ln=True)

        word_embeddings = layers.embed(cfg, cfg.vocab_size, "word_embeddings")
        x_BTD = word_embeddings(input_ids) + layers.PositionEmbedding(cfg, name="position_embeddings")(
            positions
        )
        x_BTD = layers.Dropout(cfg.dropout_rate)(x_BTD, deterministic=deterministic)

        mask_B1TT = layers.make_attention_mask(segment_ids, causal=True)
        block = layers.block_class(block_cfg)
        for i in range(cfg.num_layers):
            x_BTD = block(block_cfg, causal=True, name=f"block_{i}")(x_BTD, mask_B1TT, deterministic)
        x_BTD = layers.layer_norm(cfg, "final_norm")(x_BTD)

        return word_embeddings.attend(x_BTD)
