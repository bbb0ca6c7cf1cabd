"""T5 (Raffel et al., 2020): an encoder-decoder Transformer on the shared blocks.

shared word embeddings (no absolute positions), dropout
  -> encoder: num_layers pre-norm blocks, bidirectional, then final norm + dropout
  -> decoder: num_decoder_layers pre-norm blocks with causal self-attention and cross-attention
     over the encoder's output, then final norm + dropout
  -> output projection: the shared embedding after scaling by D^-0.5 (T5), or an untied
     lm_head (T5.1.1)

T5's blocks are the shared TransformerBlock configured (see TransformerConfig): RMS norm
(norm="rms"), no biases (use_bias=False), unscaled q.k (scale_attention=False), ReLU or
T5.1.1's gated GELU (gated_mlp with gelu_tanh), and a relative position bias
(position_embedding="relative"): each stack computes it once, from its first layer's table,
and every layer adds it to its self-attention logits. Cross-attention has no position bias.
`t5_config` gives a TransformerConfig these switches set.

Parameter-efficient tuning: config.prompt_length puts a soft prompt before the encoder's input
(the decoder sees it through the encoder's states of the real tokens; `encode` returns those
only, so decoding is unchanged); config.prefix_length gives every self-attention layer of both
stacks learned key/value prefixes (cross-attention has none).

Inputs are packed as everywhere in flaxlm: segment_ids 0 = padding, k >= 1 = the k-th packed
example (decoder example k attends to encoder example k only), positions = index within it.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxlm.models import layers
from flaxlm.models.layers import TransformerConfig

# The TransformerConfig switches that make a stack T5's (t5-small's other sizes are the caller's).
T5_SWITCHES = dict(
    pre_ln=True,
    norm="rms",
    use_bias=False,
    scale_attention=False,
    position_embedding="relative",
    layer_norm_eps=1e-6,
    activation="relu",
    pair_head=False,
    pooler=False,
    type_vocab_size=0,
    init="t5",
)


def t5_config(**fields) -> TransformerConfig:
    """A TransformerConfig with T5's switches; `fields` override them (defaults: t5-small, vocab 32128)."""
    small = dict(vocab_size=32128, hidden_size=512, num_layers=6, num_heads=8, mlp_dim=2048, head_dim=64)
    return TransformerConfig(**{**T5_SWITCHES, **small, "dropout_rate": 0.1, **fields})


class T5Stack(nn.Module):
    """T5's encoder or decoder over embedded tokens: x_BTD -> hidden_BTD (after the final norm).

    The decoder (decoder=True) takes the encoder's output encoded_BSD and its segment ids. In
    decode mode (config.decode) the decoder's self-attention reads and extends the cache; its
    relative position bias uses the positions of the cached slots.
    """

    config: TransformerConfig
    decoder: bool = False

    @nn.compact
    def __call__(
        self,
        x_BTD: jax.Array,
        segment_ids_BT: jax.Array,
        positions_BT: jax.Array,
        encoded_BSD: jax.Array | None = None,
        encoder_segment_ids_BS: jax.Array | None = None,
        prompt_PD: jax.Array | None = None,
        *,
        deterministic: bool,
    ) -> jax.Array:
        """-> hidden_BTD; prompt_PD (prompt tuning, encoder) runs before the T tokens, which alone return."""
        cfg = self.config
        dropout = layers.Dropout(cfg.dropout_rate, deterministic=deterministic)
        p = 0 if prompt_PD is None else prompt_PD.shape[0]
        real_segment_ids_BT = segment_ids_BT
        if p:
            x_BTD, segment_ids_BT = layers.prepend_prompt(prompt_PD, x_BTD, segment_ids_BT)
        x_BTD = layers.constrain_batch(dropout(x_BTD))

        key_positions_BS = positions_BT
        if self.decoder and cfg.decode:
            mask_B1TT, key_positions_BS = layers.decode_mask(self, segment_ids_BT, positions_BT)
        else:
            mask_B1TT = layers.make_attention_mask(segment_ids_BT, causal=self.decoder)
        bias_BNTT = layers.RelativePositionBias(
            cfg, bidirectional=not self.decoder, name="relative_position_bias"
        )(positions_BT, key_positions_BS)
        if p:  # the prompt has no position: no bias to or from it
            bias_BNTT = jnp.pad(bias_BNTT, ((0, 0), (0, 0), (p, 0), (p, 0)))
        cross_mask_B1TS = None
        if self.decoder:
            cross_mask_B1TS = layers.cross_attention_mask(real_segment_ids_BT, encoder_segment_ids_BS)

        block = layers.block_class(cfg)
        num_layers = (cfg.num_decoder_layers or cfg.num_layers) if self.decoder else cfg.num_layers
        for i in range(num_layers):
            x_BTD = block(cfg, causal=self.decoder, cross_attention=self.decoder, name=f"block_{i}")(
                x_BTD, mask_B1TT, deterministic, bias_BNTT, encoded_BSD, cross_mask_B1TS
            )
            x_BTD = layers.constrain_batch(x_BTD)
        x_BTD = layers.layer_norm(cfg, "final_norm")(x_BTD[:, p:])
        return dropout(x_BTD)


class T5ForConditionalGeneration(nn.Module):
    """Encoder inputs + decoder inputs (int32 [B, S] and [B, T]) -> logits_BTV of the next target token.

    decoder_input_ids are the targets shifted right by one within each example, starting with
    the decoder start token (T5: 0, the padding id). `encode` and `decode` run the halves
    separately (generation encodes once, then decodes token by token with config.decode).
    """

    config: TransformerConfig

    def setup(self):
        cfg = self.config
        if cfg.position_embedding != "relative":
            raise ValueError("T5 needs position_embedding='relative' (its only position information)")
        self.shared = layers.embed(cfg, cfg.vocab_size, "shared")
        if cfg.prompt_length:  # prompt tuning: the encoder's input only
            self.soft_prompt = layers.SoftPrompt(cfg, name="soft_prompt")
        # The encoder never caches: in decode mode it still runs once over the whole input.
        self.encoder = T5Stack(dataclasses.replace(cfg, decode=False), decoder=False, name="encoder")
        self.decoder = T5Stack(cfg, decoder=True, name="decoder")
        if not cfg.tie_embeddings:
            self.lm_head = nn.Dense(
                cfg.vocab_size,
                use_bias=False,
                kernel_init=layers.init_normal(cfg, cfg.hidden_size**-0.5),  # T5X's untied logits
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                name="lm_head",
            )

    def encode(
        self, input_ids: jax.Array, segment_ids: jax.Array, positions: jax.Array, *, deterministic: bool
    ) -> jax.Array:
        """-> encoded_BSD, the encoder's final hidden states (the real tokens', with a soft prompt)."""
        prompt_PD = self.soft_prompt(self.shared.embedding) if self.config.prompt_length else None
        return self.encoder(
            self.shared(input_ids), segment_ids, positions, prompt_PD=prompt_PD, deterministic=deterministic
        )

    def decode(
        self,
        encoded_BSD: jax.Array,
        encoder_segment_ids: jax.Array,
        decoder_input_ids: jax.Array,
        decoder_segment_ids: jax.Array,
        decoder_positions: jax.Array,
        *,
        deterministic: bool,
    ) -> jax.Array:
        """-> logits_BTV over the vocabulary for each decoder position."""
        x_BTD = self.decoder(
            self.shared(decoder_input_ids),
            decoder_segment_ids,
            decoder_positions,
            encoded_BSD,
            encoder_segment_ids,
            deterministic=deterministic,
        )
        if self.config.tie_embeddings:
            # Mesh TensorFlow's scaling for the tied projection (its embeddings are N(0, 1)).
            x_BTD = x_BTD * (self.config.hidden_size**-0.5)
            return self.shared.attend(x_BTD)
        return self.lm_head(x_BTD)

    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        positions: jax.Array,
        decoder_input_ids: jax.Array,
        decoder_segment_ids: jax.Array,
        decoder_positions: jax.Array,
        *,
        deterministic: bool,
    ) -> jax.Array:
        """Encodes the inputs, decodes the targets -> logits_BTV."""
        encoded_BSD = self.encode(input_ids, segment_ids, positions, deterministic=deterministic)
        return self.decode(
            encoded_BSD,
            segment_ids,
            decoder_input_ids,
            decoder_segment_ids,
            decoder_positions,
            deterministic=deterministic,
        )


def shift_right(targets_BT: jax.Array, segment_ids_BT: jax.Array, start_id: int = 0) -> jax.Array:
    """decoder_input_ids_BT: each packed example's targets moved one step right, start_id first.

    Position t reads targets[t - 1] when t - 1 is in the same example, else start_id; padding
    (segment 0) reads start_id too.
    """
    prev_BT = jnp.pad(targets_BT[:, :-1], ((0, 0), (1, 0)), constant_values=start_id)
    prev_seg_BT = jnp.pad(segment_ids_BT[:, :-1], ((0, 0), (1, 0)))
    same_BT = (prev_seg_BT == segment_ids_BT) & (segment_ids_BT != 0)
    return jnp.where(same_BT, prev_BT, start_id).astype(targets_BT.dtype)
