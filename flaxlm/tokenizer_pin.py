"""The tokenizer a run was trained with, kept in its workdir so that nothing can swap it later.

Without a pin, every later reader of a workdir (resume, generate, score, finetune --init, export)
would find the tokenizer the way `flaxlm train` first did: the configured file, or a sentencepiece
model cached under the corpus's fingerprint (paths, sizes, mtimes). Edit one corpus file and that
is a new model of the same size, silently paired with the old parameters.

So `flaxlm train` copies its tokenizer's file(s) to WORKDIR/tokenizer/ when the run starts and
records what it is in WORKDIR/tokenizer/pin.json:

    {"file": "spiece.model", "fingerprint": "<16 hex: sha256 of the content>", "lowercase": ...}

Readers use that copy. A resume whose config now gives another tokenizer stops with one line (its
prepared data would be another dataset too); a tokenizer given explicitly to a reader must be the
pinned one. Workdirs written before pins existed have none and are read as before.
"""

import json
import os

from flaxlm import files
from flaxlm.data import tokenizer as tokenizer_lib
from flaxlm.data.tokenizer import Tokenizer, TokenizerError

DIR = "tokenizer"
PIN_FILE = "pin.json"


def pin_path(workdir: str) -> str:
    return os.path.join(workdir, DIR, PIN_FILE)


def pin(workdir: str, tok: Tokenizer) -> None:
    """Copies `tok`'s files to WORKDIR/tokenizer/ and writes pin.json (last, so a pin is complete)."""
    folder = os.path.join(workdir, DIR)
    main_file = tok.save(folder)[0]
    record = {"file": os.path.basename(main_file), "fingerprint": tok.fingerprint}
    if isinstance(tok, tokenizer_lib.WordPieceTokenizer):
        record["lowercase"] = tok.lowercase
    files.write_atomic(pin_path(workdir), json.dumps(record, indent=2) + "\n")


def pinned(workdir: str) -> Tokenizer | None:
    """The tokenizer pinned in `workdir`, or None if it has no pin (a run from before pins)."""
    path = pin_path(workdir)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        file, fingerprint = os.path.join(workdir, DIR, record["file"]), record["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TokenizerError(f"{path} is unreadable ({e}); restore it from a copy of the workdir") from None
    tok = tokenizer_lib.load_tokenizer(file, lowercase=record.get("lowercase", True))
    if tok.fingerprint != fingerprint:
        raise TokenizerError(
            f"{file} changed after the run was trained (fingerprint {tok.fingerprint}, pinned "
            f"{fingerprint}); restore the file the run was trained with"
        )
    return tok


def pin_or_check(workdir: str, tok: Tokenizer, write: bool = True) -> None:
    """At the start of training: pin `tok` (if `write`), or, if `workdir` has a pin, require that `tok` is it.

    With several processes every one checks and only process 0 writes.
    """
    found = pinned(workdir)
    if found is None:
        if write:
            pin(workdir, tok)
    elif found.fingerprint != tok.fingerprint:
        where = os.path.join(workdir, DIR, os.path.basename(found.path))
        raise TokenizerError(
            f"{workdir} was trained with the tokenizer {where} (fingerprint {found.fingerprint}) but the "
            f"config now gives {tok.path} ({tok.fingerprint}): its corpus or tokenizer file changed since; "
            f"restore them, train in a new --workdir, or pass --config.data.tokenizer={where} to go on "
            "with the pinned one on the data as it is now"
        )


def check_given(workdir: str, pinned_tok: Tokenizer, given: Tokenizer, flag: str) -> None:
    """A tokenizer given to a reader of `workdir` (`flag` names the option) must be the one pinned there."""
    if given.fingerprint != pinned_tok.fingerprint:
        raise TokenizerError(
            f"{flag}={given.path} is not the tokenizer {workdir} was trained with (fingerprint "
            f"{given.fingerprint}, pinned {pinned_tok.fingerprint}); drop {flag} to use {pinned_tok.path}"
        )
