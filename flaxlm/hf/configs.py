"""HF config.json (BertConfig, AlbertConfig, RobertaConfig, ElectraConfig, GPT2Config, T5Config) <->
flaxlm config.model fields."""

import json
import os

from flaxlm.errors import HFError

CONFIG_FILE = "config.json"
BERT_ARCHITECTURES = ("BertModel", "BertForPreTraining", "BertForMaskedLM")
ALBERT_ARCHITECTURES = ("AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM")
ROBERTA_ARCHITECTURES = ("RobertaModel", "RobertaForMaskedLM")
ELECTRA_ARCHITECTURES = ("ElectraModel", "ElectraForPreTraining")  # the discriminator
# An imported ELECTRA discriminator carries no generator; this width is what a run continuing it with
# objective "electra" would build (the paper's 1/4), and what makes get_model build ElectraForPreTraining.
ELECTRA_GENERATOR_SIZE = 0.25
GPT_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
T5_ARCHITECTURES = ("T5ForConditionalGeneration", "T5Model")

# HF activation name -> ours. HF's "gelu_new" and "gelu_pytorch_tanh" are both the tanh approximation.
FROM_HF_ACTIVATION = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def read_config(path: str) -> dict:
    file = os.path.join(path, CONFIG_FILE)
    if not os.path.isdir(path):
        raise HFError(
            f"{path}: no such directory; pass a Hugging Face model directory (config.json + weights)"
        )
    if not os.path.isfile(file):
        raise HFError(
            f"{path}: no config.json; not a Hugging Face model directory "
            "(save one with transformers' save_pretrained)"
        )
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFError(f"{file}: not valid JSON ({e}); restore the file written by save_pretrained") from None
    if not isinstance(config, dict):
        raise HFError(f"{file}: expected a JSON object; restore the file written by save_pretrained")
    return config


def base_model_cfg() -> dict:
    from flaxlm.config import base_config

    return base_config().model.to_dict()


def check_architecture(hf_config: dict, supported: tuple[str, ...], source: str) -> str | None:
    archs = hf_config.get("architectures") or []
    if archs and archs[0] not in supported:
        raise HFError(
            f"{source}: architecture {archs[0]!r} is not supported; flaxlm imports "
            f"{', '.join(supported)} (convert the model to one of these, or load its base model)"
        )
    return archs[0] if archs else None


def _activation(name: str, source: str) -> str:
    if name not in FROM_HF_ACTIVATION:
        raise HFError(
            f"{source}: activation {name!r} is not supported; flaxlm has {sorted(FROM_HF_ACTIVATION)}"
        )
    return FROM_HF_ACTIVATION[name]


def bert_model_cfg(hf: dict, source: str) -> dict:
    """config.json of HF BERT -> our model fields (HF BertConfig's defaults for absent keys)."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise HFError(
            f"{source}: position_embedding_type={hf['position_embedding_type']!r} is not supported; "
            "flaxlm imports BERTs with 'absolute' (learned) position embeddings"
        )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise HFError(f"{source}: a BERT decoder (is_decoder/add_cross_attention) is not supported")
    cfg = base_model_cfg()
    cfg.update(
        arch="bert",
        vocab_size=hf.get("vocab_size", 30522),
        hidden_size=hf.get("hidden_size", 768),
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12),
        mlp_dim=hf.get("intermediate_size", 3072),
        max_len=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
        pre_ln=False,
        position_embedding="learned",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        activation=_activation(hf.get("hidden_act", "gelu"), source),
        initializer_range=hf.get("initializer_range", 0.02),
    )
    return cfg


def albert_model_cfg(hf: dict, source: str) -> dict:
    """config.json of HF ALBERT -> our model fields (HF AlbertConfig's defaults for absent keys).

    ALBERT is our BERT with factorised embeddings and every layer sharing one
    block: HF's single layer group of a single layer.
    """
    for key in ("num_hidden_groups", "inner_group_num"):
        if hf.get(key, 1) != 1:
            raise HFError(
                f"{source}: {key}={hf[key]} is not supported; flaxlm imports ALBERTs whose layers all share "
                "one block (num_hidden_groups=1 and inner_group_num=1, as every released ALBERT)"
            )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise HFError(
            f"{source}: position_embedding_type={hf['position_embedding_type']!r} is not supported; "
            "flaxlm imports ALBERTs with 'absolute' (learned) position embeddings"
        )
    cfg = base_model_cfg()
    cfg.update(
        arch="bert",
        vocab_size=hf.get("vocab_size", 30000),
        embedding_size=hf.get("embedding_size", 128),
        hidden_size=hf.get("hidden_size", 4096),
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 64),
        mlp_dim=hf.get("intermediate_size", 16384),
        max_len=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        dropout_rate=hf.get("hidden_dropout_prob", 0.0),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.0),
        pre_ln=False,
        position_embedding="learned",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        activation=_activation(hf.get("hidden_act", "gelu_new"), source),
        initializer_range=hf.get("initializer_range", 0.02),
        share_layers="all",
    )
    return cfg


def roberta_model_cfg(hf: dict, source: str) -> dict:
    """config.json of HF RoBERTa -> our model fields (HF RobertaConfig's defaults for absent keys).

    RoBERTa is our BERT whose positions start at row padding_idx + 1 of the table: HF numbers the real
    tokens padding_idx + 1, padding_idx + 2, ... (fairseq's make_positions), so position_offset =
    pad_token_id + 1 and max_len = max_position_embeddings - position_offset (roberta-base: 514 - 2).
    """
    cfg = bert_model_cfg(hf, source)
    pad_id = hf.get("pad_token_id", 1)
    if not isinstance(pad_id, int) or pad_id < 0:
        raise HFError(
            f"{source}: pad_token_id={pad_id!r}; HF RoBERTa numbers positions from pad_token_id + 1, "
            "so flaxlm needs it as an id >= 0 (roberta-base has 1)"
        )
    offset = pad_id + 1
    rows = hf.get("max_position_embeddings", 512)
    if rows <= offset:
        raise HFError(
            f"{source}: max_position_embeddings={rows} leaves no position after padding_idx + 1 = {offset} "
            f"(HF RoBERTa's first position); it needs more than {offset} rows (roberta-base has 514)"
        )
    cfg.update(
        vocab_size=hf.get("vocab_size", 50265),
        type_vocab_size=hf.get("type_vocab_size", 2),
        max_len=rows - offset,
        position_offset=offset,
    )
    return cfg


def electra_model_cfg(hf: dict, source: str) -> dict:
    """config.json of an HF ELECTRA discriminator -> our model fields (ElectraConfig's defaults: small).

    ELECTRA's discriminator is our BERT without pooler, its embeddings factorised (embedding_size) when
    HF's embedding_size differs from hidden_size (HF then has `embeddings_project`), not shared across layers.
    """
    cfg = bert_model_cfg(hf, source)
    hidden = hf.get("hidden_size", 256)
    embedding = hf.get("embedding_size", 128)
    cfg.update(
        hidden_size=hidden,
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 4),
        mlp_dim=hf.get("intermediate_size", 1024),
        embedding_size=0 if embedding == hidden else embedding,
        pooler=False,
    )
    return cfg


def is_albert(cfg: dict) -> bool:
    """Whether a BERT model config has HF ALBERT's shape: factorised embeddings, one block for every layer."""
    return cfg.get("embedding_size", 0) > 0 and cfg.get("share_layers", "none") == "all"


def gpt_model_cfg(hf: dict, source: str) -> dict:
    """config.json of HF GPT-2 -> our model fields (HF GPT2Config's defaults for absent keys)."""
    for key, expected in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
        if hf.get(key, expected) != expected:
            raise HFError(
                f"{source}: {key}={hf[key]} is not supported; flaxlm's GPT-2 needs {key}={expected}"
            )
    if hf.get("add_cross_attention"):
        raise HFError(f"{source}: GPT-2 with cross-attention (add_cross_attention) is not supported")
    hidden = hf.get("n_embd", 768)
    cfg = base_model_cfg()
    cfg.update(
        arch="gpt",
        vocab_size=hf.get("vocab_size", 50257),
        hidden_size=hidden,
        num_layers=hf.get("n_layer", 12),
        num_heads=hf.get("n_head", 12),
        mlp_dim=hf.get("n_inner") or 4 * hidden,
        max_len=hf.get("n_positions", 1024),
        type_vocab_size=0,  # GPT-2 has no token-type embeddings
        # GPT-2 has separate embedding and residual dropout rates; ours has one (the residual one).
        dropout_rate=hf.get("resid_pdrop", 0.1),
        attention_dropout_rate=hf.get("attn_pdrop", 0.1),
        pre_ln=True,
        position_embedding="learned",
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        activation=_activation(hf.get("activation_function", "gelu_new"), source),
        initializer_range=hf.get("initializer_range", 0.02),
        pair_head=False,
    )
    return cfg


def t5_model_cfg(hf: dict, source: str) -> dict:
    """config.json of HF T5 -> our model fields (HF T5Config's defaults, t5-small's, for absent keys).

    feed_forward_proj "relu" is T5; "gated-gelu" (T5.1.1) is our gated_mlp with gelu_tanh, as HF
    maps it to gelu_new.
    """
    from flaxlm.models.t5 import T5_SWITCHES

    proj = hf.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    activation = "gelu_new" if proj == "gated-gelu" else proj.split("-")[-1]
    layers = hf.get("num_layers", 6)
    cfg = base_model_cfg()
    cfg.update(T5_SWITCHES)
    cfg.update(
        arch="t5",
        vocab_size=hf.get("vocab_size", 32128),
        hidden_size=hf.get("d_model", 512),
        head_dim=hf.get("d_kv", 64),
        mlp_dim=hf.get("d_ff", 2048),
        num_layers=layers,
        num_decoder_layers=hf.get("num_decoder_layers") or layers,
        num_heads=hf.get("num_heads", 8),
        max_len=hf.get("n_positions", 512),
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        # HF T5 applies its one dropout_rate to the attention probabilities too.
        dropout_rate=hf.get("dropout_rate", 0.1),
        attention_dropout_rate=hf.get("dropout_rate", 0.1),
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        activation=_activation(activation, source),
        gated_mlp=gated,
        tie_embeddings=hf.get("tie_word_embeddings", True),
    )
    return cfg


def t5_hf_config(cfg: dict, architecture: str, pad_id: int, eos_id: int) -> dict:
    act = TO_HF_ACTIVATION[cfg["activation"]]
    if cfg["gated_mlp"]:
        proj = "gated-gelu" if act == "gelu_new" else f"gated-{act}"
    else:
        proj = act
    return {
        "architectures": [architecture],
        "model_type": "t5",
        "vocab_size": cfg["vocab_size"],
        "d_model": cfg["hidden_size"],
        "d_kv": cfg["head_dim"] or cfg["hidden_size"] // cfg["num_heads"],
        "d_ff": cfg["mlp_dim"],
        "num_layers": cfg["num_layers"],
        "num_decoder_layers": cfg["num_decoder_layers"] or cfg["num_layers"],
        "num_heads": cfg["num_heads"],
        "relative_attention_num_buckets": cfg["relative_attention_num_buckets"],
        "relative_attention_max_distance": cfg["relative_attention_max_distance"],
        "dropout_rate": cfg["dropout_rate"],
        "layer_norm_epsilon": cfg["layer_norm_eps"],
        "feed_forward_proj": proj,
        "is_encoder_decoder": True,
        "tie_word_embeddings": cfg["tie_embeddings"],
        "pad_token_id": pad_id,
        "eos_token_id": eos_id,
        "decoder_start_token_id": pad_id,
        "torch_dtype": "float32",
    }


def is_t5_shaped(cfg: dict) -> str | None:
    """Why a t5 model config has no HF T5 equivalent, or None if it has one."""
    from flaxlm.models.t5 import T5_SWITCHES

    for key in ("pre_ln", "norm", "use_bias", "scale_attention", "position_embedding"):
        if cfg.get(key) != T5_SWITCHES[key]:
            return f"{key}={cfg.get(key)!r} (HF T5 has {T5_SWITCHES[key]!r})"
    if cfg.get("adapter_dim", 0) or cfg.get("share_layers", "none") != "none" or cfg.get("embedding_size", 0):
        return "adapters, embedding_size or share_layers (HF T5 has none)"
    return None


def bert_hf_config(cfg: dict, architecture: str, pad_id: int) -> dict:
    return {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["hidden_size"],
        "num_hidden_layers": cfg["num_layers"],
        "num_attention_heads": cfg["num_heads"],
        "intermediate_size": cfg["mlp_dim"],
        "hidden_act": TO_HF_ACTIVATION[cfg["activation"]],
        "hidden_dropout_prob": cfg["dropout_rate"],
        "attention_probs_dropout_prob": cfg["attention_dropout_rate"],
        "max_position_embeddings": cfg["max_len"],
        "type_vocab_size": cfg["type_vocab_size"],
        "initializer_range": cfg["initializer_range"],
        "layer_norm_eps": cfg["layer_norm_eps"],
        "position_embedding_type": "absolute",
        "pad_token_id": pad_id,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def roberta_hf_config(cfg: dict, architecture: str, bos_id: int, eos_id: int) -> dict:
    """RobertaConfig of a position_offset > 0 BERT; pad_token_id is the offset - 1 (see roberta_model_cfg)."""
    config = bert_hf_config(cfg, architecture, cfg["position_offset"] - 1)
    config.update(
        model_type="roberta",
        max_position_embeddings=cfg["max_len"] + cfg["position_offset"],
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    return config


def albert_hf_config(cfg: dict, architecture: str, pad_id: int) -> dict:
    config = bert_hf_config(cfg, architecture, pad_id)
    config.update(
        model_type="albert",
        embedding_size=cfg["embedding_size"],
        num_hidden_groups=1,
        inner_group_num=1,
    )
    return config


def electra_hf_config(cfg: dict, architecture: str, pad_id: int) -> dict:
    config = bert_hf_config(cfg, architecture, pad_id)
    config.update(model_type="electra", embedding_size=cfg["embedding_size"] or cfg["hidden_size"])
    return config


def gpt_hf_config(cfg: dict, eos_id: int | None) -> dict:
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg["vocab_size"],
        "n_embd": cfg["hidden_size"],
        "n_layer": cfg["num_layers"],
        "n_head": cfg["num_heads"],
        "n_inner": cfg["mlp_dim"],
        "n_positions": cfg["max_len"],
        "activation_function": TO_HF_ACTIVATION[cfg["activation"]],
        "resid_pdrop": cfg["dropout_rate"],
        "embd_pdrop": cfg["dropout_rate"],
        "attn_pdrop": cfg["attention_dropout_rate"],
        "layer_norm_epsilon": cfg["layer_norm_eps"],
        "initializer_range": cfg["initializer_range"],
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    if eos_id is not None:
        config.update(bos_token_id=eos_id, eos_token_id=eos_id)
    return config


def heads_of(model_cfg: dict, params) -> list[str]:
    """What a BERT's params hold besides the encoder: a subset of ["pooler", "mlm", "pair", "rtd"] (rtd:
    ELECTRA's discriminator head); GPT: ["lm"]; T5: ["lm"], or [] for an untied T5Model without lm_head."""
    if model_cfg["arch"] == "t5":
        return ["lm"] if model_cfg.get("tie_embeddings", True) or "lm_head" in params else []
    if model_cfg["arch"] == "gpt":
        return ["lm"]  # tied to the word embeddings, so always there
    present = {
        "pooler": "pooler" in params["encoder"],
        "mlm": "mlm_bias" in params,
        "pair": "pair_head" in params,
        "rtd": "rtd_head" in params,
    }
    return [name for name, there in present.items() if there]


def objective_of(model_cfg: dict) -> str:
    """The flaxlm objective whose heads match: "clm" (gpt), "span_corruption" (t5), "electra" (an ELECTRA
    discriminator), "mlm_nsp" (BERT with a pair head), "mlm_sop" (ALBERT with a pair head: its
    sentence-order head), "mlm"."""
    if model_cfg["arch"] == "t5":
        return "span_corruption"
    if model_cfg["arch"] == "gpt":
        return "clm"
    if model_cfg.get("generator_size", 0) > 0:
        return "electra"
    if not model_cfg.get("pair_head"):
        return "mlm"
    return "mlm_sop" if is_albert(model_cfg) else "mlm_nsp"
