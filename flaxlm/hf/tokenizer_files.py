"""Tokenizer files of an HF directory <-> flaxlm Tokenizers.

BERT's vocab.txt -> WordPieceTokenizer (do_lower_case from tokenizer_config.json);
GPT-2's and RoBERTa's vocab.json + merges.txt, encoder.json + vocab.bpe or tokenizer.json ->
flaxlm.data.bpe.ByteLevelBPETokenizer. flaxlm's own sentencepiece models are
written as spiece.model and declared as transformers' BigBirdTokenizer: a plain
sentencepiece tokenizer (no extra normalisation, unlike ALBERT's, which rewrites
`` and '' as ") that builds [CLS] A [SEP] B [SEP] like BERT. It gives the same ids
as flaxlm on text without literal special-token strings such as "[MASK]".
"""

import json
import os

from flaxlm.data import bpe
from flaxlm.data.tokenizer import SentencePieceTokenizer, Tokenizer, WordPieceTokenizer
from flaxlm.errors import HFError

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPM_FILE = "spiece.model"


def read_tokenizer(path: str, wordpiece: bool) -> Tokenizer | None:
    """The tokenizer in an HF directory, or None when it has none flaxlm reads.

    wordpiece: a BERT directory (vocab.txt); otherwise byte-level BPE files are looked for.
    """
    tok_config = {}
    tok_config_file = os.path.join(path, TOKENIZER_CONFIG_FILE)
    if os.path.isfile(tok_config_file):
        try:
            with open(tok_config_file, encoding="utf-8") as f:
                tok_config = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HFError(f"{tok_config_file}: not valid JSON ({e}); fix or remove the file") from None
    if os.path.isfile(os.path.join(path, SPM_FILE)):  # written by save_hf for flaxlm-trained models
        return SentencePieceTokenizer(os.path.join(path, SPM_FILE))
    if wordpiece:
        vocab = os.path.join(path, "vocab.txt")
        if not os.path.isfile(vocab):
            return None
        lowercase = bool(tok_config.get("do_lower_case", True))
        strip_accents = tok_config.get("strip_accents")
        if strip_accents is not None and strip_accents != lowercase:
            raise HFError(
                f"{tok_config_file}: strip_accents={strip_accents} with do_lower_case={lowercase} is not "
                "supported (flaxlm strips accents exactly when it lowercases); remove the tokenizer files "
                "to import the weights alone"
            )
        if not tok_config.get("tokenize_chinese_chars", True) or not tok_config.get(
            "do_basic_tokenize", True
        ):
            raise HFError(
                f"{tok_config_file}: tokenize_chinese_chars/do_basic_tokenize=false is not supported; "
                "remove the tokenizer files to import the weights alone"
            )
        return WordPieceTokenizer(vocab, lowercase=lowercase)
    for name in ("vocab.json", "encoder.json", "tokenizer.json"):
        if os.path.isfile(os.path.join(path, name)):
            return bpe.ByteLevelBPETokenizer.from_path(os.path.join(path, name))
    return None


def save_tokenizer(tok: Tokenizer, directory: str) -> str:
    """Writes `tok`'s files into `directory` in a form both flaxlm and transformers read.

    Returns the file to give `flaxlm.data.tokenizer.load_tokenizer` (or --config.data.tokenizer):
    vocab.txt (WordPiece), spiece.model (sentencepiece) or vocab.json (+ merges.txt, GPT-2 BPE).
    """
    if not isinstance(tok, (WordPieceTokenizer, SentencePieceTokenizer, bpe.ByteLevelBPETokenizer)):
        raise HFError(f"cannot save a {type(tok).__name__} in Hugging Face format")
    return tok.save(directory)[0]


def tokenizer_config(tok: Tokenizer, max_len: int) -> dict:
    """tokenizer_config.json telling transformers' AutoTokenizer how to read the saved files."""
    if isinstance(tok, bpe.ByteLevelBPETokenizer) and tok.roberta:
        # RobertaTokenizer adds <s> A </s> (</s></s> B </s> for pairs) around byte-level BPE.
        return {
            "tokenizer_class": "RobertaTokenizer",
            "add_prefix_space": False,
            **{f"{name}_token": piece for name, piece in bpe.ROBERTA_SPECIALS.items()},
            "model_max_length": max_len,
        }
    if isinstance(tok, bpe.ByteLevelBPETokenizer):
        eot = bpe.END_OF_TEXT
        return {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            "bos_token": eot,
            "eos_token": eot,
            "unk_token": eot,
            "model_max_length": max_len,
        }
    specials = {
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
        "model_max_length": max_len,
    }
    if isinstance(tok, WordPieceTokenizer):
        return {"tokenizer_class": "BertTokenizer", "do_lower_case": tok.lowercase, **specials}
    # Sentencepiece: BigBirdTokenizer encodes with the model as is (no extra normalisation) and builds
    # [CLS] A [SEP] B [SEP]; token_type_ids are not in its default outputs, so ask for them.
    return {
        "tokenizer_class": "BigBirdTokenizer",
        "bos_token": "[CLS]",
        "eos_token": "[SEP]",
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **specials,
    }
