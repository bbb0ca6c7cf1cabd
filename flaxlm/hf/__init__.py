"""Hugging Face interoperability: HF BERT / ALBERT / RoBERTa / ELECTRA / GPT-2 / T5 directories <-> flaxlm
parameters.

    model_cfg, params, tokenizer = load_hf("path/to/hf_dir")
    model = flaxlm.models.get_model(model_cfg)      # BertForPreTraining or GPTDecoder
    save_hf("path/to/out", model_cfg, params, tokenizer)   # transformers' from_pretrained reads it

An HF directory holds config.json, the weights (model.safetensors, a sharded
model.safetensors.index.json, or pytorch_model.bin, which needs torch) and the
tokenizer files. Supported:

  BERT (model_type "bert"): BertModel, BertForPreTraining, BertForMaskedLM. Which
    heads exist is read from the weight names, so the returned params hold exactly
    what the checkpoint has: the encoder always, the pooler, the MLM head (mlm_*)
    and the NSP head (pair_head) when present. model_cfg["pooler"] and
    model_cfg["pair_head"] say which. A BertModel checkpoint has no MLM head: its
    params are {"encoder": ...} and run with
    `BertEncoder(get_model(model_cfg).config).apply({"params": params["encoder"]}, ...)`.
  ALBERT (model_type "albert"): AlbertModel, AlbertForPreTraining, AlbertForMaskedLM, as
    flaxlm's BERT with embedding_size=E and share_layers="all" (HF's one layer group of one
    layer; other groupings are refused). Heads as for BERT; the pair head is ALBERT's SOP
    head (sop_classifier), so a re-import calls its objective mlm_sop. ALBERT's own
    tokenizer (AlbertTokenizer) lowercases before its sentencepiece model, which flaxlm's
    sentencepiece tokenizer does not.
  RoBERTa (model_type "roberta"): RobertaModel, RobertaForMaskedLM, as flaxlm's BERT with
    position_offset = pad_token_id + 1 (2 for roberta-base): HF numbers real tokens from
    padding_idx + 1, so its table of max_position_embeddings rows is ours of max_len =
    max_position_embeddings - position_offset rows plus the offset's unread rows. The MLM head is
    lm_head (tied decoder); RobertaForMaskedLM has no pooler (a checkpoint that carries one keeps
    it, as roberta-base's does). The tokenizer is byte-level BPE with RoBERTa's <s> </s> <pad>
    <mask> <unk> (see flaxlm.data.bpe).
  ELECTRA (model_type "electra"): the discriminator, ElectraForPreTraining (its replaced-token
    detection head: rtd_dense, rtd_head) and ElectraModel, as flaxlm's ElectraForPreTraining
    (generator_size > 0) / BERT without pooler, factorised (embedding_size) when HF's embedding_size
    differs from hidden_size. The generator is pretraining-only: an export leaves it out, and an
    import has none (model_cfg generator_size says the width a continued run would give it).
  GPT-2 (model_type "gpt2"): GPT2LMHeadModel, GPT2Model (the LM head is tied to the
    word embeddings in both).
  T5 (model_type "t5"): T5ForConditionalGeneration, T5Model, as flaxlm's arch "t5"
    (flaxlm.models.t5): T5 (ReLU, tied output projection) and T5.1.1 (feed_forward_proj
    "gated-gelu", tie_word_embeddings false: an lm_head of its own). The stacks' embed_tokens
    are the shared embedding and are not written. An untied T5Model has no lm_head: its params
    lack it and heads_of gives [].

Weight layouts: torch's nn.Linear stores [out, in] and flax's Dense kernel is
[in, out], so BERT's linear weights are transposed. GPT-2's Conv1D weights are
already [in, out]; its fused c_attn [D, 3D] is our query | key | value
concatenated along the output axis. Tied weights (BERT's MLM decoder, GPT-2's
lm_head) are not written, as transformers' save_pretrained does not write them.
Weights are read and written as float32 (bf16/fp16 checkpoints are widened).

Tokenizers: BERT's vocab.txt -> WordPieceTokenizer (do_lower_case from
tokenizer_config.json); GPT-2's and RoBERTa's vocab.json + merges.txt, encoder.json +
vocab.bpe or tokenizer.json -> flaxlm.data.bpe.ByteLevelBPETokenizer; our own
sentencepiece models travel as spiece.model, declared as transformers'
BigBirdTokenizer (a plain sentencepiece tokenizer that adds [CLS] ... [SEP]
like BERT), which gives the same ids as flaxlm on text without literal
special-token strings.
"""

import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np

from flaxlm import files
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.errors import FlaxlmError, HFError
from flaxlm.hf.configs import (
    ALBERT_ARCHITECTURES,
    BERT_ARCHITECTURES,
    CONFIG_FILE,
    ELECTRA_ARCHITECTURES,
    ELECTRA_GENERATOR_SIZE,
    GPT_ARCHITECTURES,
    ROBERTA_ARCHITECTURES,
    T5_ARCHITECTURES,
    TO_HF_ACTIVATION,
    albert_hf_config,
    albert_model_cfg,
    base_model_cfg,
    bert_hf_config,
    bert_model_cfg,
    check_architecture,
    electra_hf_config,
    electra_model_cfg,
    gpt_hf_config,
    gpt_model_cfg,
    heads_of,
    is_albert,
    objective_of,
    read_config,
    roberta_hf_config,
    roberta_model_cfg,
    t5_hf_config,
    t5_model_cfg,
    is_t5_shaped,
)
from flaxlm.hf.tokenizer_files import TOKENIZER_CONFIG_FILE, read_tokenizer, save_tokenizer, tokenizer_config
from flaxlm.hf.weights import (
    BUFFER_SUFFIXES,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX_FILE,
    TORCH_FILE,
    albert_weights,
    bert_weights,
    check_shapes,
    electra_weights,
    gpt_weights,
    read_weights,
    roberta_weights,
    t5_weights,
    to_flaxlm,
    to_hf,
)

__all__ = [
    "HFError",
    "export_workdir",
    "heads_of",
    "import_hf",
    "is_hf_dir",
    "load_hf",
    "objective_of",
    "save_hf",
    "save_tokenizer",
]


def is_hf_dir(path: str) -> bool:
    """Whether `path` is a directory with an HF config.json (with a model_type) and weights."""
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return False
    try:
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    weights = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, TORCH_FILE)
    return (
        isinstance(config, dict)
        and "model_type" in config
        and any(os.path.isfile(os.path.join(path, w)) for w in weights)
    )


@dataclasses.dataclass(frozen=True)
class _EncoderFamily:
    """How one HF encoder type's checkpoints name what flaxlm's BERT reads (`load_hf`)."""

    architectures: tuple[str, ...]  # [1] is the class with every head, for messages
    model_cfg: Callable[[dict, str], dict]  # (HF config, source) -> flaxlm config.model fields
    weights: Callable[..., list]  # (model_cfg, *, prefix, pooler, mlm, pair, rtd) -> the correspondence
    prefix: str  # of the encoder's weights in the classes with heads ("bert.")
    pooler: str  # the pooler's weight, after the prefix
    mlm_head: str  # the MLM head's module: its .bias, and its .decoder tied to the word embeddings
    pair_head: str  # the NSP/SOP classifier's weight ("" if the family has none)
    pair_task: str  # what that head predicts, for messages
    rtd_head: str = ""  # ELECTRA's discriminator head's first weight ("" if the family has none)


_ENCODERS = {
    "bert": _EncoderFamily(
        BERT_ARCHITECTURES,
        bert_model_cfg,
        lambda cfg, rtd, **kw: bert_weights(cfg["num_layers"], **kw),
        "bert.",
        "pooler.dense.weight",
        "cls.predictions",
        "cls.seq_relationship.weight",
        "NSP",
    ),
    "albert": _EncoderFamily(
        ALBERT_ARCHITECTURES,
        albert_model_cfg,
        lambda cfg, rtd, **kw: albert_weights(**kw),  # one shared block, whatever the depth
        "albert.",
        "pooler.weight",
        "predictions",
        "sop_classifier.classifier.weight",
        "SOP",
    ),
    "roberta": _EncoderFamily(
        ROBERTA_ARCHITECTURES,
        roberta_model_cfg,
        lambda cfg, pair, rtd, **kw: roberta_weights(cfg["num_layers"], **kw),  # RoBERTa has no pair head
        "roberta.",
        "pooler.dense.weight",
        "lm_head",
        "",
        "",
    ),
    "electra": _EncoderFamily(
        ELECTRA_ARCHITECTURES,
        electra_model_cfg,
        lambda cfg, prefix, rtd, **kw: electra_weights(
            cfg["num_layers"], prefix=prefix, projection=cfg["embedding_size"] > 0, rtd=rtd
        ),
        "electra.",
        "pooler.dense.weight",  # ELECTRA has no pooler: never present
        "generator_lm_head",  # the generator's (ElectraForMaskedLM, refused by architecture)
        "",
        "",
        "discriminator_predictions.dense_prediction.weight",
    ),
}


def load_hf(path: str) -> tuple[dict, Any, Tokenizer | None]:
    """Reads an HF BERT, ALBERT, RoBERTa, GPT-2 or T5 directory: returns (model_cfg, params, tokenizer).

    model_cfg: a plain dict of flaxlm config.model fields (plus pair_head), ready
    for `flaxlm.models.get_model`. params: the nested dict of float32 numpy
    arrays that model's `apply({"params": params}, ...)` takes; for a BERT
    without MLM head (BertModel) only {"encoder": ...} (see the module
    docstring). tokenizer: a flaxlm Tokenizer of the directory's tokenizer
    files, or None when there are none.
    """
    path = os.fspath(path)
    hf_config = read_config(path)
    source = os.path.join(path, CONFIG_FILE)
    model_type = hf_config.get("model_type")
    if model_type in _ENCODERS:
        family = _ENCODERS[model_type]
        check_architecture(hf_config, family.architectures, source)
        model_cfg = family.model_cfg(hf_config, source)
        weights = read_weights(path)
        prefix = family.prefix if any(k.startswith(family.prefix) for k in weights) else ""
        pooler = prefix + family.pooler in weights
        mlm = f"{family.mlm_head}.bias" in weights
        pair = bool(family.pair_head) and family.pair_head in weights
        if pair and not pooler:
            raise HFError(
                f"{path}: the checkpoint has an {family.pair_task} head but no pooler; "
                f"{family.architectures[1]} checkpoints have both"
            )
        rtd = bool(family.rtd_head) and family.rtd_head in weights
        rules = family.weights(model_cfg, prefix=prefix, pooler=pooler, mlm=mlm, pair=pair, rtd=rtd)
        model_cfg.update(pooler=pooler, pair_head=pair)
        if rtd:  # builds ElectraForPreTraining (the discriminator's head; no generator weights)
            model_cfg["generator_size"] = ELECTRA_GENERATOR_SIZE
        tied = {f"{family.mlm_head}.decoder.weight": f"{prefix}embeddings.word_embeddings.weight"}
        ignored = {f"{family.mlm_head}.decoder.bias"}  # the same Parameter as the head's bias
    elif model_type == "gpt2":
        check_architecture(hf_config, GPT_ARCHITECTURES, source)
        model_cfg = gpt_model_cfg(hf_config, source)
        weights = read_weights(path)
        prefix = "transformer." if any(k.startswith("transformer.") for k in weights) else ""
        rules = gpt_weights(model_cfg["num_layers"], prefix=prefix)
        tied = {"lm_head.weight": f"{prefix}wte.weight"}
        ignored = set()
    elif model_type == "t5":
        check_architecture(hf_config, T5_ARCHITECTURES, source)
        model_cfg = t5_model_cfg(hf_config, source)
        weights = read_weights(path)
        tied = {f"{stack}.embed_tokens.weight": "shared.weight" for stack in ("encoder", "decoder")}
        lm_head = not model_cfg["tie_embeddings"] and "lm_head.weight" in weights
        if model_cfg["tie_embeddings"]:
            tied["lm_head.weight"] = "shared.weight"
        rules = t5_weights(
            model_cfg["num_layers"],
            model_cfg["num_decoder_layers"],
            gated=model_cfg["gated_mlp"],
            lm_head=lm_head,
        )
        ignored = set()
    else:
        raise HFError(
            f"{source}: model_type {model_type!r} is not supported; flaxlm imports 'bert' "
            f"({', '.join(BERT_ARCHITECTURES)}), 'albert' ({', '.join(ALBERT_ARCHITECTURES)}), "
            f"'roberta' ({', '.join(ROBERTA_ARCHITECTURES)}), "
            f"'electra' ({', '.join(ELECTRA_ARCHITECTURES)}), "
            f"'gpt2' ({', '.join(GPT_ARCHITECTURES)}) and 't5' ({', '.join(T5_ARCHITECTURES)})"
        )

    for name, tied_to in tied.items():
        if name in weights and tied_to in weights and not np.array_equal(weights[name], weights[tied_to]):
            raise HFError(
                f"{path}: {name} differs from {tied_to}; flaxlm ties the output projection to the word "
                "embeddings, so untied checkpoints are not supported"
            )
    known = {r.hf for r in rules} | set(tied) | ignored
    supported = (
        BERT_ARCHITECTURES
        + ALBERT_ARCHITECTURES
        + ROBERTA_ARCHITECTURES
        + ELECTRA_ARCHITECTURES
        + GPT_ARCHITECTURES
        + T5_ARCHITECTURES
    )
    unexpected = sorted(k for k in weights if k not in known and not k.endswith(BUFFER_SUFFIXES))
    if unexpected:
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise HFError(
            f"{path}: unexpected weights {unexpected[:3]}{more}; only "
            f"{', '.join(supported)} checkpoints are supported"
        )
    params = to_flaxlm(weights, rules, path)
    check_shapes(model_cfg, params, path)

    tok = read_tokenizer(path, wordpiece=model_type == "bert")
    if tok is not None and tok.vocab_size > model_cfg["vocab_size"]:
        raise HFError(
            f"{path}: the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is "
            f"{model_cfg['vocab_size']}; the tokenizer files belong to another model"
        )
    return model_cfg, params, tok


SBO_PARAMS = ("sbo_head", "sbo_bias")  # flaxlm.models.bert's span-boundary head (objective mlm_sbo)
GENERATOR_PARAMS = ("generator",)  # flaxlm.models.electra's generator (objective electra)


def save_hf(path: str, model_cfg: dict, params, tokenizer: Tokenizer | None = None) -> None:
    """Writes config.json + model.safetensors (+ tokenizer files) that transformers' from_pretrained loads.

    The HF class follows the heads in `params`: BERT with a pair head ->
    BertForPreTraining (an SOP head too: same shape, its labels mean sentence
    order; a re-import calls its objective mlm_nsp); with an MLM head only -> BertForMaskedLM (which ignores
    the pooler; load_hf keeps it); encoder only -> BertModel. An ALBERT-shaped BERT (embedding_size > 0,
    share_layers="all") -> AlbertForPreTraining / AlbertForMaskedLM / AlbertModel likewise; other
    factorisations or sharings have no HF equivalent and are refused. A BERT with position_offset > 0
    (RoBERTa's layout) -> RobertaForMaskedLM / RobertaModel, its pad_token_id position_offset - 1
    (HF RoBERTa derives positions from it, so a tokenizer with another [PAD] id is refused); a pair
    head has no HF RoBERTa class and is refused. A span-boundary (SBO) head is left out. An ELECTRA
    (generator_size > 0) -> ElectraForPreTraining, the discriminator and its RTD head; the generator is
    left out (HF's ElectraForMaskedLM generator is a separate model that does not share embeddings). GPT ->
    GPT2LMHeadModel. Sinusoidal position tables are written as HF's learned
    position embeddings (same values; a reload gives position_embedding
    "learned"). BERT with pre_ln=True has no HF equivalent and is refused.
    """
    import jax

    from flaxlm.models import layers

    path = os.fspath(path)
    model_cfg = dict(model_cfg)
    arch = model_cfg.get("arch")
    params = jax.device_get(params)
    if arch not in ("bert", "gpt", "t5"):
        raise HFError(
            f"model arch {arch!r} cannot be saved in Hugging Face format; expected 'bert', 'gpt' or 't5'"
        )
    if model_cfg.get("activation", "gelu") not in TO_HF_ACTIVATION:
        raise HFError(f"activation {model_cfg['activation']!r} has no Hugging Face equivalent")
    base = base_model_cfg()
    model_cfg = {**base, **model_cfg}
    if arch == "bert":
        model_cfg["pooler"] = "pooler" in params["encoder"]
        model_cfg["pair_head"] = "pair_head" in params
        # SpanBERT's span-boundary head is a pretraining head HF BERT has no place for; SpanBERT's own
        # releases are BERT encoders with their MLM head, as this export is.
        params = {k: v for k, v in params.items() if k not in SBO_PARAMS + GENERATOR_PARAMS}
    check_shapes(model_cfg, params, f"the {arch} parameters")
    if arch == "t5" and is_t5_shaped(model_cfg):
        raise HFError(f"a t5 model with {is_t5_shaped(model_cfg)} has no Hugging Face equivalent")
    if model_cfg["position_embedding"] == "sinusoidal":
        table = layers.sinusoidal_table(model_cfg["max_len"], model_cfg["hidden_size"])
        params = {k: dict(v) if isinstance(v, dict) else v for k, v in params.items()}
        where = params["encoder"] if arch == "bert" else params
        where["position_embeddings"] = {"embedding": table}
    if tokenizer is not None and tokenizer.vocab_size > model_cfg["vocab_size"]:
        raise HFError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{model_cfg['vocab_size']}; pass the tokenizer the model was trained with"
        )

    if arch == "gpt" and model_cfg["position_offset"]:
        raise HFError(
            f"position_offset={model_cfg['position_offset']} has no HF GPT-2 equivalent (its positions start "
            "at row 0); only position_offset=0 GPTs can be saved in HF format"
        )
    if arch == "bert":
        if model_cfg["pre_ln"]:
            raise HFError(
                "a pre_ln=True BERT has no Hugging Face equivalent (HF BERT is post-LN); "
                "only post-LN BERTs can be saved in HF format"
            )
        mlm, pair, pooler = "mlm_bias" in params, model_cfg["pair_head"], model_cfg["pooler"]
        pad_id = tokenizer.pad_id if tokenizer else 0
        if model_cfg.get("generator_size", 0) > 0:
            architecture = _electra_architecture(model_cfg, pooler, pair)
            prefix = "electra."
            rules = electra_weights(
                model_cfg["num_layers"], prefix=prefix, projection=model_cfg["embedding_size"] > 0, rtd=True
            )
            hf_config = electra_hf_config(model_cfg, architecture, pad_id)
        elif model_cfg["position_offset"]:
            architecture = _roberta_architecture(model_cfg, mlm, pair, tokenizer)
            prefix = "" if architecture == "RobertaModel" else "roberta."
            rules = roberta_weights(model_cfg["num_layers"], prefix=prefix, pooler=pooler, mlm=mlm)
            bos_eos = (tokenizer.cls_id, tokenizer.sep_id) if tokenizer else (0, 2)  # RobertaConfig's
            hf_config = roberta_hf_config(model_cfg, architecture, *bos_eos)
        elif is_albert(model_cfg):
            architecture = "AlbertForPreTraining" if pair else "AlbertForMaskedLM" if mlm else "AlbertModel"
            prefix = "" if architecture == "AlbertModel" else "albert."
            rules = albert_weights(prefix=prefix, pooler=pooler, mlm=mlm, pair=pair)
            hf_config = albert_hf_config(model_cfg, architecture, pad_id)
        elif model_cfg["embedding_size"] or model_cfg["share_layers"] != "none":
            raise HFError(
                f"embedding_size={model_cfg['embedding_size']} with share_layers="
                f"{model_cfg['share_layers']!r} has no Hugging Face equivalent; HF ALBERT is "
                "embedding_size > 0 with share_layers='all', HF BERT is 0 with 'none'"
            )
        else:
            architecture = "BertForPreTraining" if pair else "BertForMaskedLM" if mlm else "BertModel"
            prefix = "" if architecture == "BertModel" else "bert."
            rules = bert_weights(model_cfg["num_layers"], prefix=prefix, pooler=pooler, mlm=mlm, pair=pair)
            hf_config = bert_hf_config(model_cfg, architecture, pad_id)
    elif arch == "t5":
        lm_head = "lm_head" in params
        architecture = (
            "T5Model" if not (model_cfg["tie_embeddings"] or lm_head) else "T5ForConditionalGeneration"
        )
        rules = t5_weights(
            model_cfg["num_layers"],
            model_cfg["num_decoder_layers"] or model_cfg["num_layers"],
            gated=model_cfg["gated_mlp"],
            lm_head=lm_head,
        )
        pad_eos = (tokenizer.pad_id, tokenizer.sep_id) if tokenizer else (0, 1)  # T5Config's
        hf_config = t5_hf_config(model_cfg, architecture, *pad_eos)
    else:
        rules = gpt_weights(model_cfg["num_layers"], prefix="transformer.")
        hf_config = gpt_hf_config(model_cfg, tokenizer.sep_id if tokenizer else None)
    weights = to_hf(params, rules)

    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise HFError(
            "saving in Hugging Face format needs the 'safetensors' package; pip install 'flaxlm[hf]'"
        ) from None
    from flaxlm.checkpoint import check_writable

    check_writable(path, "the HF output directory")
    with files.atomic_path(os.path.join(path, SAFETENSORS_FILE)) as tmp:
        save_file(weights, tmp, metadata={"format": "pt"})  # "pt": the layout transformers' torch models read
    _write_json(os.path.join(path, CONFIG_FILE), hf_config)
    if tokenizer is not None:
        save_tokenizer(tokenizer, path)
        _write_json(
            os.path.join(path, TOKENIZER_CONFIG_FILE), tokenizer_config(tokenizer, model_cfg["max_len"])
        )


def _electra_architecture(model_cfg: dict, pooler: bool, pair: bool) -> str:
    """ElectraForPreTraining for an ELECTRA whose layout HF ELECTRA has, or an HFError saying why not."""
    if pooler or pair:
        raise HFError("an ELECTRA with a [CLS] pooler or NSP/SOP head has no Hugging Face equivalent")
    if model_cfg["embedding_size"] == model_cfg["hidden_size"] or model_cfg["share_layers"] != "none":
        raise HFError(
            f"embedding_size={model_cfg['embedding_size']} with share_layers="
            f"{model_cfg['share_layers']!r} has no Hugging Face ELECTRA equivalent (HF projects the "
            "embeddings only when their width differs from hidden_size, and shares no layers): use "
            "embedding_size 0 for E = D, and share_layers 'none'"
        )
    if model_cfg["position_offset"]:
        raise HFError(
            f"position_offset={model_cfg['position_offset']} has no Hugging Face ELECTRA equivalent"
        )
    return "ElectraForPreTraining"


def _roberta_architecture(model_cfg: dict, mlm: bool, pair: bool, tokenizer: Tokenizer | None) -> str:
    """The HF RoBERTa class of a position_offset > 0 BERT, or an HFError saying why it has none."""
    offset = model_cfg["position_offset"]
    if pair:
        raise HFError(
            f"a BERT with position_offset={offset} (RoBERTa) and an NSP/SOP head has no Hugging Face "
            "equivalent (HF RoBERTa has no pair head); train it with objective 'mlm'"
        )
    if model_cfg["embedding_size"] or model_cfg["share_layers"] != "none":
        raise HFError(
            f"position_offset={offset} with embedding_size={model_cfg['embedding_size']} and share_layers="
            f"{model_cfg['share_layers']!r} has no Hugging Face equivalent; HF RoBERTa has neither"
        )
    if tokenizer is not None and tokenizer.pad_id != offset - 1:
        raise HFError(
            f"HF RoBERTa numbers positions from pad_token_id + 1, so position_offset={offset} needs the "
            f"tokenizer's [PAD] at id {offset - 1}, but it is {tokenizer.pad_id}; use a RoBERTa vocab.json "
            "(<pad> = 1) or save the weights without the tokenizer"
        )
    return "RobertaForMaskedLM" if mlm else "RobertaModel"


def _write_json(file: str, obj) -> None:
    files.write_atomic(file, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- CLI operations


def import_hf(hf_dir: str, out: str) -> dict:
    """`flaxlm import-hf`: an HF directory -> a flaxlm export (OUT/params.msgpack + OUT/model_config.json).

    The tokenizer files go beside them; model_config.json names the one to give
    --config.data.tokenizer ("tokenizer", relative to OUT; null when the HF
    directory has none) and lists the heads the checkpoint has ("heads", see
    `heads_of`). The objective is the one those heads fit (`objective_of`:
    "mlm" also for an encoder alone); step is 0. Returns the model_config.json dict.
    """
    from flaxlm import checkpoint as ckpt

    model_cfg, params, tok = load_hf(hf_dir)
    meta = {
        "model": model_cfg,
        "objective": objective_of(model_cfg),
        "step": 0,
        "hf_dir": os.path.abspath(hf_dir),
        "heads": heads_of(model_cfg, params),
        "tokenizer": None,
    }
    if tok is not None:
        ckpt.add_tokenizer(out, tok, meta)
    ckpt.write_export(out, params, meta)
    return meta


def workdir_tokenizer(config: dict) -> Tokenizer | None:
    """The tokenizer a training run with this saved config.json used, or None if it is not on this machine.

    For a workdir from before tokenizers were pinned in it (flaxlm.tokenizer_pin). Either the
    configured file (config.data.tokenizer) or the sentencepiece model `flaxlm train` trained and
    cached in the data dir. Never trains one.
    """
    from flaxlm.data import prepare as prepare_lib
    from flaxlm.data import tokenizer as tokenizer_lib

    data = config.get("data", {})
    if data.get("tokenizer"):
        path = data["tokenizer"]
    else:
        data_dir = data.get("data_dir") or prepare_lib.default_data_dir()
        try:
            fingerprint = prepare_lib.tokenizer_cache_key(
                data.get("corpus", "default"),
                data.get("validation_fraction", 0.02),
                # None (a config from before the setting): the key its model was cached under
                data.get("tokenizer_sample_sentences"),
                data.get("tokenizer_seed", 0),
            )
        except FlaxlmError:  # the corpus files are gone, so the cache key cannot be rebuilt
            return None
        path = tokenizer_lib.spm_cache_path(
            os.path.join(data_dir, "tokenizers"),
            config["model"]["vocab_size"],
            data.get("tokenizer_type", "unigram"),
            fingerprint,
        )
    return tokenizer_lib.load_tokenizer(path) if os.path.isfile(path) else None


def export_workdir(workdir: str, out: str, step: int | None = None) -> tuple[int, Tokenizer | None]:
    """`flaxlm export --format=hf`: checkpoint `step` (default: the latest) of a run -> an HF directory.

    Returns (step, the tokenizer written or None when the run's tokenizer was not found).
    """
    from flaxlm import checkpoint as ckpt
    from flaxlm import objectives

    params, step, saved = ckpt.restore_params(workdir, step)
    model_cfg = dict(saved["model"])
    model_cfg["pair_head"] = objectives.has_pair_head(saved["objective"])
    from flaxlm import tokenizer_pin

    tok = tokenizer_pin.pinned(workdir) or workdir_tokenizer(saved)
    save_hf(out, model_cfg, params, tok)
    return step, tok
