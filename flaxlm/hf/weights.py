"""HF BERT / ALBERT / RoBERTa / ELECTRA / GPT-2 / T5 state dicts <-> flaxlm parameter trees, and weight files.

torch's nn.Linear stores [out, in] and flax's Dense kernel is [in, out], so
BERT's linear weights are transposed. GPT-2's Conv1D weights are already
[in, out]; its fused c_attn [D, 3D] is our query | key | value concatenated
along the output axis. Tied weights (BERT's, ALBERT's and RoBERTa's MLM decoder, GPT-2's lm_head) have
no entry: transformers' save_pretrained does not write them either.
"""

import dataclasses
import json
import os

import numpy as np

from flaxlm.errors import HFError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"

# Buffers some checkpoints carry that are not parameters (HF recomputes them).
BUFFER_SUFFIXES = ("embeddings.position_ids", ".attn.bias", ".attn.masked_bias")


@dataclasses.dataclass(frozen=True)
class _Weight:
    """One HF tensor and the flaxlm parameter(s) it holds.

    ours: one path into the params tree, or several (GPT-2's fused c_attn) that
    are the HF tensor split into equal parts along its last axis.
    transpose: torch nn.Linear's [out, in] <-> flax Dense's [in, out].
    """

    hf: str
    ours: tuple[tuple[str, ...], ...]
    transpose: bool = False


def _linear(hf: str, ours: tuple[str, ...], transpose: bool = True) -> list[_Weight]:
    return [
        _Weight(f"{hf}.weight", (ours + ("kernel",),), transpose),
        _Weight(f"{hf}.bias", (ours + ("bias",),)),
    ]


def _norm(hf: str, ours: tuple[str, ...]) -> list[_Weight]:
    return [_Weight(f"{hf}.weight", (ours + ("scale",),)), _Weight(f"{hf}.bias", (ours + ("bias",),))]


def _embedding(hf: str, ours: tuple[str, ...]) -> _Weight:
    return _Weight(f"{hf}.weight", (ours + ("embedding",),))


def bert_weights(num_layers: int, *, prefix: str, pooler: bool, mlm: bool, pair: bool) -> list[_Weight]:
    """The HF BERT <-> flaxlm BertForPreTraining correspondence.

    prefix: "bert." for BertForPreTraining/BertForMaskedLM, "" for BertModel.
    """
    enc = ("encoder",)
    w = [
        _embedding(f"{prefix}embeddings.word_embeddings", enc + ("word_embeddings",)),
        _embedding(f"{prefix}embeddings.position_embeddings", enc + ("position_embeddings",)),
        _embedding(f"{prefix}embeddings.token_type_embeddings", enc + ("token_type_embeddings",)),
        *_norm(f"{prefix}embeddings.LayerNorm", enc + ("embeddings_norm",)),
    ]
    for i in range(num_layers):
        hf, ours = f"{prefix}encoder.layer.{i}", enc + (f"block_{i}",)
        for name in ("query", "key", "value"):
            w += _linear(f"{hf}.attention.self.{name}", ours + ("attention", name))
        w += _linear(f"{hf}.attention.output.dense", ours + ("attention", "out"))
        w += _norm(f"{hf}.attention.output.LayerNorm", ours + ("attention_norm",))
        w += _linear(f"{hf}.intermediate.dense", ours + ("mlp", "fc_in"))
        w += _linear(f"{hf}.output.dense", ours + ("mlp", "fc_out"))
        w += _norm(f"{hf}.output.LayerNorm", ours + ("mlp_norm",))
    if pooler:
        w += _linear(f"{prefix}pooler.dense", enc + ("pooler",))
    if mlm:
        w += _linear("cls.predictions.transform.dense", ("mlm_transform",))
        w += _norm("cls.predictions.transform.LayerNorm", ("mlm_norm",))
        w.append(_Weight("cls.predictions.bias", (("mlm_bias",),)))
    if pair:
        w += _linear("cls.seq_relationship", ("pair_head",))
    return w


def roberta_weights(num_layers: int, *, prefix: str, pooler: bool, mlm: bool) -> list[_Weight]:
    """The HF RoBERTa <-> flaxlm BertForPreTraining (position_offset > 0) correspondence.

    The encoder is named as BERT's; the MLM head is `lm_head` (dense, layer_norm, bias; its decoder is
    tied to the word embeddings). prefix: "roberta." for RobertaForMaskedLM, "" for RobertaModel.
    """
    w = bert_weights(num_layers, prefix=prefix, pooler=pooler, mlm=False, pair=False)
    if mlm:
        w += _linear("lm_head.dense", ("mlm_transform",))
        w += _norm("lm_head.layer_norm", ("mlm_norm",))
        w.append(_Weight("lm_head.bias", (("mlm_bias",),)))
    return w


def electra_weights(num_layers: int, *, prefix: str, projection: bool, rtd: bool) -> list[_Weight]:
    """The HF ELECTRA discriminator <-> flaxlm ElectraForPreTraining (`encoder`, RTD head) correspondence.

    The encoder is named as BERT's, without pooler; `embeddings_project` (E -> D, when HF's embedding_size
    differs from hidden_size) is our embedding_projection. The head discriminator_predictions is rtd_dense
    (D -> D) and rtd_head (D -> 1). prefix: "electra." for ElectraForPreTraining, "" for ElectraModel.
    """
    w = bert_weights(num_layers, prefix=prefix, pooler=False, mlm=False, pair=False)
    if projection:
        w += _linear(f"{prefix}embeddings_project", ("encoder", "embedding_projection"))
    if rtd:
        w += _linear("discriminator_predictions.dense", ("rtd_dense",))
        w += _linear("discriminator_predictions.dense_prediction", ("rtd_head",))
    return w


def albert_weights(*, prefix: str, pooler: bool, mlm: bool, pair: bool) -> list[_Weight]:
    """The HF ALBERT <-> flaxlm BertForPreTraining (embedding_size > 0, share_layers="all") correspondence.

    HF's one layer group of one layer is our `shared_block`. prefix: "albert." for
    AlbertForPreTraining/AlbertForMaskedLM, "" for AlbertModel.
    """
    enc = ("encoder",)
    w = [
        _embedding(f"{prefix}embeddings.word_embeddings", enc + ("word_embeddings",)),
        _embedding(f"{prefix}embeddings.position_embeddings", enc + ("position_embeddings",)),
        _embedding(f"{prefix}embeddings.token_type_embeddings", enc + ("token_type_embeddings",)),
        *_norm(f"{prefix}embeddings.LayerNorm", enc + ("embeddings_norm",)),
        *_linear(f"{prefix}encoder.embedding_hidden_mapping_in", enc + ("embedding_projection",)),
    ]
    hf, ours = f"{prefix}encoder.albert_layer_groups.0.albert_layers.0", enc + ("shared_block",)
    for name in ("query", "key", "value"):
        w += _linear(f"{hf}.attention.{name}", ours + ("attention", name))
    w += _linear(f"{hf}.attention.dense", ours + ("attention", "out"))
    w += _norm(f"{hf}.attention.LayerNorm", ours + ("attention_norm",))
    w += _linear(f"{hf}.ffn", ours + ("mlp", "fc_in"))
    w += _linear(f"{hf}.ffn_output", ours + ("mlp", "fc_out"))
    w += _norm(f"{hf}.full_layer_layer_norm", ours + ("mlp_norm",))
    if pooler:
        w += _linear(f"{prefix}pooler", enc + ("pooler",))
    if mlm:
        w += _linear("predictions.dense", ("mlm_transform",))
        w += _norm("predictions.LayerNorm", ("mlm_norm",))
        w.append(_Weight("predictions.bias", (("mlm_bias",),)))
    if pair:
        w += _linear("sop_classifier.classifier", ("pair_head",))
    return w


def gpt_weights(num_layers: int, *, prefix: str) -> list[_Weight]:
    """The HF GPT-2 <-> flaxlm GPTDecoder correspondence; prefix "transformer." for GPT2LMHeadModel."""
    w = [
        _embedding(f"{prefix}wte", ("word_embeddings",)),
        _embedding(f"{prefix}wpe", ("position_embeddings",)),
    ]
    for i in range(num_layers):
        hf, ours = f"{prefix}h.{i}", (f"block_{i}",)
        qkv = tuple(ours + ("attention", name) for name in ("query", "key", "value"))
        w += _norm(f"{hf}.ln_1", ours + ("attention_norm",))
        w.append(_Weight(f"{hf}.attn.c_attn.weight", tuple(p + ("kernel",) for p in qkv)))
        w.append(_Weight(f"{hf}.attn.c_attn.bias", tuple(p + ("bias",) for p in qkv)))
        w += _linear(f"{hf}.attn.c_proj", ours + ("attention", "out"), transpose=False)
        w += _norm(f"{hf}.ln_2", ours + ("mlp_norm",))
        w += _linear(f"{hf}.mlp.c_fc", ours + ("mlp", "fc_in"), transpose=False)
        w += _linear(f"{hf}.mlp.c_proj", ours + ("mlp", "fc_out"), transpose=False)
    w += _norm(f"{prefix}ln_f", ("final_norm",))
    return w


def _t5_stack(stack: str, num_layers: int, *, gated: bool) -> list[_Weight]:
    """HF T5's `stack` ("encoder" / "decoder") <-> flaxlm T5Stack: bias-free linears, RMS-norm scales.

    HF numbers each block's sublayers: layer.0 self-attention, (decoder) layer.1 cross-attention,
    then the feed-forward; only block 0's self-attention holds the stack's relative position bias.
    """
    ours = (stack,)
    w = [
        _Weight(
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            ((stack, "relative_position_bias", "embedding"),),
        )
    ]
    for i in range(num_layers):
        hf, block = f"{stack}.block.{i}.layer", ours + (f"block_{i}",)
        sublayers = [("SelfAttention", "attention")]
        if stack == "decoder":
            sublayers.append(("EncDecAttention", "cross_attention"))
        for j, (hf_name, name) in enumerate(sublayers):
            for hf_proj, proj in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out")):
                w.append(
                    _Weight(f"{hf}.{j}.{hf_name}.{hf_proj}.weight", (block + (name, proj, "kernel"),), True)
                )
            w.append(_Weight(f"{hf}.{j}.layer_norm.weight", (block + (f"{name}_norm", "scale"),)))
        ff = f"{hf}.{len(sublayers)}"
        mlp = block + ("mlp",)
        fc_in = (("wi_0", "fc_in"), ("wi_1", "fc_linear")) if gated else (("wi", "fc_in"),)
        for hf_name, name in (*fc_in, ("wo", "fc_out")):
            w.append(_Weight(f"{ff}.DenseReluDense.{hf_name}.weight", (mlp + (name, "kernel"),), True))
        w.append(_Weight(f"{ff}.layer_norm.weight", (block + ("mlp_norm", "scale"),)))
    w.append(_Weight(f"{stack}.final_layer_norm.weight", ((stack, "final_norm", "scale"),)))
    return w


def t5_weights(num_layers: int, num_decoder_layers: int, *, gated: bool, lm_head: bool) -> list[_Weight]:
    """The HF T5ForConditionalGeneration / T5Model <-> flaxlm T5ForConditionalGeneration correspondence.

    lm_head: the untied output projection (T5.1.1); a tied one is the shared embedding and has no
    entry, nor have the stacks' embed_tokens (the same tensor as `shared`).
    """
    w = [_embedding("shared", ("shared",))]
    w += _t5_stack("encoder", num_layers, gated=gated)
    w += _t5_stack("decoder", num_decoder_layers, gated=gated)
    if lm_head:
        w.append(_Weight("lm_head.weight", (("lm_head", "kernel"),), True))
    return w


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def to_flaxlm(weights: dict[str, np.ndarray], rules: list[_Weight], source: str) -> dict:
    """HF state dict -> nested params; every rule's tensor must exist."""
    params: dict = {}
    for rule in rules:
        if rule.hf not in weights:
            raise HFError(
                f"{source}: weight {rule.hf!r} is missing although config.json implies it; "
                "the weights do not match the config (re-save the model with transformers)"
            )
        w = weights[rule.hf]
        if rule.transpose:
            w = w.T
        parts = np.split(w, len(rule.ours), axis=-1) if len(rule.ours) > 1 else [w]
        for path, part in zip(rule.ours, parts):
            _set(params, path, np.ascontiguousarray(part))
    return params


def to_hf(params, rules: list[_Weight]) -> dict[str, np.ndarray]:
    """Nested params -> HF state dict (float32, contiguous)."""
    out = {}
    for rule in rules:
        try:
            parts = [np.asarray(_get(params, path), dtype=np.float32) for path in rule.ours]
        except (KeyError, TypeError):
            missing = "/".join(rule.ours[0])
            raise HFError(
                f"the parameters lack {missing}; pass the full parameter tree of the model"
            ) from None
        w = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        out[rule.hf] = np.ascontiguousarray(w.T if rule.transpose else w)
    return out


# ----------------------------------------------------------------------------- weight files


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise HFError(
            f"{file}: reading safetensors needs the 'safetensors' package; pip install 'flaxlm[hf]'"
        ) from None
    out = {}
    try:
        with safe_open(file, framework="np") as f:
            for name in f.keys():
                try:
                    out[name] = f.get_tensor(name)
                except TypeError:  # bfloat16: numpy has no such dtype, so read it through jax
                    with safe_open(file, framework="flax") as fj:
                        out[name] = np.asarray(fj.get_tensor(name), dtype=np.float32)
    except OSError as e:
        raise HFError(f"{file}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise HFError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return out


def _read_torch(file: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise HFError(
            f"{file}: reading pytorch_model.bin needs torch; pip install 'flaxlm[hf]' "
            "(or save the model as safetensors)"
        ) from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or non-torch file
        raise HFError(f"{file}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_weights(path: str) -> dict[str, np.ndarray]:
    """The HF state dict in `path` (safetensors, sharded safetensors or pytorch_model.bin), float32."""
    single = os.path.join(path, SAFETENSORS_FILE)
    index = os.path.join(path, SAFETENSORS_INDEX_FILE)
    if os.path.isfile(single):
        weights = _read_safetensors(single)
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        weights = {}
        for shard in shards:
            weights.update(_read_safetensors(os.path.join(path, shard)))
    elif os.path.isfile(os.path.join(path, TORCH_FILE)):
        weights = _read_torch(os.path.join(path, TORCH_FILE))
    else:
        raise HFError(
            f"{path}: no model.safetensors or pytorch_model.bin; flaxlm reads torch-format HF weights only "
            "(save the model with transformers' save_pretrained)"
        )
    out = {}
    for name, w in weights.items():
        # Old BERT checkpoints name LayerNorm parameters gamma/beta.
        if ".LayerNorm." in name:
            name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        out[name] = w.astype(np.float32) if np.issubdtype(w.dtype, np.floating) else w
    return out


# ----------------------------------------------------------------------------- shape check


def _dummy_inputs(model_cfg: dict) -> tuple:
    z = np.zeros((1, 8), np.int32)
    return {"gpt": (z, z, z), "t5": (z,) * 6}.get(model_cfg["arch"], (z, z, z, z))


def check_shapes(model_cfg: dict, params, source: str) -> None:
    """Every array in `params` has the shape flaxlm's model of `model_cfg` gives it (heads may be absent)."""
    import jax

    from flaxlm import models

    model = models.get_model(model_cfg)
    expected = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), *_dummy_inputs(model_cfg), deterministic=True)
    )["params"]
    flat_expected = {
        jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)
    }
    for key, value in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(key)
        if name not in flat_expected:
            raise HFError(f"{source}: parameter {name} does not exist in flaxlm's {model_cfg['arch']} model")
        if tuple(np.shape(value)) != tuple(flat_expected[name]):
            raise HFError(
                f"{source}: parameter {name} has shape {tuple(np.shape(value))} but the config implies "
                f"{tuple(flat_expected[name])}; the weights do not match the config"
            )
