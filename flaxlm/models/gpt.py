"""GPT-2 (Radford et al., 2019): a causal decoder-only language model.

embeddings (word + learned position, dropout)
  -> num_layers pre-LN Transformer blocks with a causal, per-document mask
  -> final LayerNorm -> LM head tied to the word embeddings (no bias).

Given a prefix_mask, the same model is a prefix LM (Raffel et al., 2020, §3.2.1): each document's
prefix attends to itself bidirectionally, the rest causally.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxlm.models import layers
from flaxlm.models.layers import TransformerConfig


class GPTDecoder(nn.Module):
    """Causal LM: int32 [B, T] inputs -> next-token logits_BTV.

    segment_ids: 0 = padding, k >= 1 = k-th packed document; positions: index
    within the document. Query t sees keys s <= t of its own document only.
    prefix_mask (prefix LM; None: plain causal LM): int [B, T], nonzero on each document's
    first positions, its prefix, whose keys every query of the document sees as well.
    Blocks are always pre-LN (GPT-2), whatever config.pre_ln says; there are no
    token-type embeddings.

    Decoding (config.decode=True, same params): a first `init` call with inputs
    of the cache length S creates the "cache" collection (attention keys/values
    plus the slots' segment ids); each later call, with `mutable=["cache"]`,
    appends its T tokens at the next T slots and attends over all written
    slots, so a prompt can be fed in one call and new tokens one (or more) at a
    time. Every row writes at the same slots: prompts of different lengths are
    left-padded (segment 0) with positions counted from each row's first real token.

    config.prompt_length = P (prompt tuning) runs a soft prompt before the T tokens;
    config.prefix_length (prefix tuning) adds learned keys/values to every layer. Either way the
    outputs are the T tokens'. In decode mode the soft prompt takes the first P cache slots: the
    init call counts them in the cache length (S = P + its T), the prefill (the first call after
    init, `prefill=True`) writes them before its tokens, and later calls (`prefill=False`) attend
    to them. The prompt sits before any left padding and has no position, as in training, so
    positions are unchanged. `prefill` is required in decode mode with a prompt, and ignored
    otherwise.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        prefix_mask: jax.Array | None = None,
        *,
        deterministic: bool,
        return_hidden: bool = False,
        prefill: bool | None = None,
    ) -> jax.Array:
        """-> logits_BTV, or with return_hidden the final hidden states hidden_BTD (for task heads, and
        for a loss that projects them onto the vocabulary itself: logits_BTV is hidden_BTD @
        output_embedding(params).T in config.dtype)."""
        cfg = self.config
        if cfg.embedding_size or cfg.share_layers != "none":
            raise ValueError(
                "embedding_size and share_layers (ALBERT) are BERT options; GPTDecoder has neither"
            )
        # GPT-2 blocks are pre-LN; the flag only chooses between BERT variants.
        block_cfg = dataclasses.replace(cfg, pre_ln=True)

        word_embeddings = layers.embed(cfg, cfg.vocab_size, "word_embeddings")
        x_BTD = word_embeddings(input_ids) + layers.PositionEmbedding(cfg, name="position_embeddings")(
            positions
        )
        p = cfg.prompt_length
        if p and cfg.decode and self.has_variable("cache", "index"):  # not the init call
            if prefill is None:
                raise ValueError(
                    "prompt_length > 0 in decode mode: pass prefill=True on the first call after init "
                    "(it writes the soft prompt to the first cache slots) and prefill=False after it"
                )
            p = p if prefill else 0
        if p:
            # The soft prompt goes first, without a position, so every token attends to it.
            prompt_PD = layers.SoftPrompt(cfg, name="soft_prompt")(word_embeddings.embedding)
            x_BTD, segment_ids = layers.prepend_prompt(prompt_PD, x_BTD, segment_ids)
            if prefix_mask is not None:
                prefix_mask = jnp.pad(prefix_mask, ((0, 0), (p, 0)))
        x_BTD = layers.constrain_batch(layers.Dropout(cfg.dropout_rate)(x_BTD, deterministic=deterministic))

        mask_B1TT = layers.make_attention_mask(segment_ids, causal=True, prefix_BT=prefix_mask)
        if cfg.decode:  # over the cache slots instead: [B, 1, T, S]
            if prefix_mask is not None:
                raise ValueError("prefix_mask is for training and scoring; decoding caches causal attention")
            mask_B1TT, _ = layers.decode_mask(self, segment_ids)
        # With a prefix the mask is not causal: no causal hint for cuDNN, which would apply one.
        causal = prefix_mask is None
        block = layers.block_class(block_cfg)
        for i in range(cfg.num_layers):
            x_BTD = layers.constrain_batch(
                block(block_cfg, causal=causal, name=f"block_{i}")(x_BTD, mask_B1TT, deterministic)
            )
        x_BTD = layers.layer_norm(cfg, "final_norm")(x_BTD[:, p:])  # the real tokens only
        if return_hidden:
            return x_BTD
        return word_embeddings.attend(x_BTD)


def output_embedding(params) -> jax.Array:
    """embedding_VD of GPTDecoder's LM head, which is tied to its word embeddings."""
    return params["word_embeddings"]["embedding"]
