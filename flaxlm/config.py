"""The one config schema every recipe in configs/ starts from.

A recipe (configs/bert_tiny.py, ...) calls `base_config()` and overrides
fields; the CLI then lets any field be overridden on the command line
(`--config.model.num_layers=4`). `validate()` turns mistakes that would
otherwise surface deep inside a jit trace into one-line errors.
"""

import ml_collections

from flaxlm.errors import ConfigError  # noqa: F401  (re-exported: config.ConfigError)
from flaxlm import sharding
from flaxlm.data.builders import NSP_NEGATIVES
from flaxlm.models.layers import SHARE_LAYERS
from flaxlm.objectives import DECODER_OBJECTIVES, OBJECTIVES, SEQ2SEQ_OBJECTIVES, has_pair_head, has_sbo_head

ENCODER_BUILDERS = ("segment_pair", "sentence_pair", "full_sentences", "doc_sentences", "sop")
DECODER_BUILDERS = ("causal", "prefix_lm")
ENCODER_DECODER_BUILDERS = ("span_corruption", "iid_denoising")
# The builder each decoder and encoder-decoder objective trains on (an encoder's choose among theirs).
OBJECTIVE_BUILDERS = {
    "clm": "causal",
    "prefix_lm": "prefix_lm",
    "span_corruption": "span_corruption",
    "iid_denoising": "iid_denoising",
}
ARCHS = ("bert", "gpt", "t5")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model shape: BERT-base by default. Field names are those of
    # flaxlm.models.TransformerConfig plus `arch`.
    c.model = ml_collections.ConfigDict(
        dict(
            arch="bert",  # "bert" (encoder) | "gpt" (decoder) | "t5" (encoder-decoder)
            vocab_size=30522,
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            mlp_dim=3072,
            max_len=512,
            # RoBERTa (BERT only): position p reads row p + position_offset of a max_len + position_offset
            # row table, the layout of HF RoBERTa's (2 for roberta-base); 0: BERT
            position_offset=0,
            type_vocab_size=2,
            dropout_rate=0.1,
            attention_dropout_rate=0.1,
            pre_ln=False,
            position_embedding="learned",  # "learned" | "sinusoidal" | "relative" (T5 only)
            layer_norm_eps=1e-12,
            activation="gelu",  # "gelu" (erf, BERT) | "gelu_tanh" (GPT-2)
            initializer_range=0.02,
            # "normal": N(0, initializer_range) everywhere (BERT, GPT-2); "t5": T5's fan-in scaled normals
            # (embeddings N(0, 1)), which T5_SWITCHES set
            init="normal",
            dtype="float32",  # compute dtype: "float32" | "bfloat16"
            param_dtype="float32",
            remat=False,
            pooler=True,  # BERT's tanh pooler on [CLS]; False drops it (needs an objective without NSP/SOP)
            # "xla": einsum attention (with attention dropout); "dot_product":
            # jax.nn.dot_product_attention, cuDNN flash attention on GPU (needs attention_dropout_rate=0)
            attention="xla",
            # ALBERT (BERT only): > 0 factorises the embeddings, E wide then projected to hidden_size
            # (0: hidden_size wide, no projection, BERT as is)
            embedding_size=0,
            # cross-layer parameter sharing: "none" | "all" (ALBERT) | "attention" | "ffn"
            share_layers="none",
            # T5's switches (see flaxlm.models.t5.T5_SWITCHES; the defaults are BERT's / GPT-2's):
            norm="layer",  # "layer" | "rms" (T5: scale only, no mean, no bias)
            use_bias=True,  # biases in the Dense layers (T5: none)
            scale_attention=True,  # q.k / sqrt(head size) (T5: unscaled)
            head_dim=0,  # attention head size; 0: hidden_size // num_heads (T5's d_kv)
            gated_mlp=False,  # act(fc_in(x)) * fc_linear(x) (T5.1.1's gated GELU with gelu_tanh)
            # position_embedding="relative" (T5): buckets of the per-head relative position bias
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            num_decoder_layers=0,  # T5's decoder depth; 0: num_layers
            tie_embeddings=True,  # T5: output projection = the shared embedding (False: an lm_head, T5.1.1)
            # ELECTRA (objective "electra"): the generator's hidden size, heads and MLP as a fraction of
            # these (0 < g <= 1; the paper's best 1/4 to 1/2); 0: no generator (every other objective)
            generator_size=0.0,
        )
    )

    # What is learned: "mlm_nsp" (BERT), "mlm" (NSP removed), "mlm_sop" (ALBERT),
    # "mlm_sbo" (SpanBERT: MLM + span-boundary objective, needs data.span), "clm" (GPT,
    # left-to-right), "prefix_lm" (arch gpt: a bidirectional prefix, then left-to-right; data.builder
    # prefix_lm), "span_corruption" (T5: needs arch t5 and data.builder span_corruption),
    # "iid_denoising" (T5's BERT-style objective: arch t5, data.builder iid_denoising), "electra"
    # (ELECTRA: an MLM generator and a discriminator on replaced-token detection, needs
    # model.generator_size > 0). The builder of a decoder or T5 objective is named as the objective
    # (clm: "causal"). The pair head exists only for *_nsp/*_sop, the SBO head only for mlm_sbo.
    c.objective = "mlm_nsp"
    c.pair_weight = 1.0  # total loss = MLM + pair_weight * NSP/SOP
    c.rtd_weight = 50.0  # electra: total loss = generator MLM + rtd_weight * discriminator RTD (λ = 50)

    c.data = ml_collections.ConfigDict(
        dict(
            # "default" (the 4 embedded corpora), one of them ("shakespeare", "austen", "bible", "pydocs"),
            # a glob of .txt/.jsonl files, or "tfds:NAME"; several joined by commas ("austen,pydocs")
            corpus="default",
            data_dir="",  # prepared ArrayRecord shards + tokenizers; "" = $FLAXLM_DATA_DIR or ~/.cache/flaxlm
            # a sentencepiece .model or WordPiece vocab.txt; "" = train sentencepiece on the corpus
            tokenizer="",
            tokenizer_type="unigram",  # when training one: "unigram" | "bpe"
            # when training one: on a uniform sample of this many training sentences, drawn with
            # tokenizer_seed (0: all of them); a corpus with fewer is used whole, whatever the seed
            tokenizer_sample_sentences=10_000_000,
            # the sample's seed, apart from data.seed so that a study's seeds share one vocabulary
            tokenizer_seed=0,
            # see flaxlm.data.builders.BUILDERS; decoders: "causal" | "prefix_lm"; T5: "span_corruption" |
            # "iid_denoising" (config.OBJECTIVE_BUILDERS)
            builder="segment_pair",
            seq_len=128,
            max_predictions=20,  # MLM predictions per sequence (BERT: 20 for 128, 80 for 512)
            # "dynamic": new mask each time an example is seen (RoBERTa); "static": fixed when prepared (BERT)
            masking="dynamic",
            # copies of the training split, each with its own segmentation, pairs and (static) masks;
            # > 1 needs a builder with randomness or static masking (see validate)
            dupe_factor=1,
            mask_prob=0.15,
            whole_word=False,
            span=False,  # SpanBERT geometric span masking
            ngram=False,  # ALBERT n-gram masking: n <= max_ngram whole words, p(n) ∝ 1/n
            max_ngram=3,
            short_seq_prob=0.1,
            # where NSP's NotNext segments come from: "any" other document (BERT), "same_source" or
            # "other_source" (a source is one corpus of the spec; the default spec has four)
            nsp_negatives="any",
            validation_fraction=0.02,
            # span_corruption (T5): noise_density of the tokens in spans of mean_noise_span_length,
            # each replaced by a sentinel; the sentinels are the model's last num_sentinels ids (a
            # trained tokenizer gets model.vocab_size - num_sentinels pieces). iid_denoising: each
            # token is noise with probability noise_density, 90% of it the first sentinel, 10% a
            # random token (num_sentinels reserved all the same, so it shares span corruption's vocabulary)
            noise_density=0.15,
            mean_noise_span_length=3.0,
            num_sentinels=100,
            seed=0,
            prefetch=4,  # batches prepared ahead on background threads
            # threads making training batches (0: in the training loop's thread), in each worker if any
            reader_threads=2,
            # grain worker processes making training batches (0: none, the trainer's process reads);
            # the batches are the same for any number (tools/data_benchmark.py --workers measures them)
            reader_workers=0,
            # Preparation on Apache Beam (pip install flaxlm[beam]), the same records as in process:
            # prepare_workers > 0 runs Beam's local runner with that many processes; beam_options (Beam's
            # flags, e.g. "--runner=FlinkRunner --flink_master=HOST:8081") runs on a cluster instead
            prepare_workers=0,
            beam_options="",
        )
    )

    c.train = ml_collections.ConfigDict(
        dict(
            batch_size=256,  # global, in sequences
            num_steps=1_000_000,
            # End this run at this step (0: num_steps), checkpointed, with the learning-rate schedule
            # still spanning num_steps: a phase of a multi-phase recipe (BERT: seq 128, then 512).
            stop_at_step=0,
            grad_accum_steps=1,
            learning_rate=1e-4,
            warmup_steps=10_000,
            schedule="linear",  # "linear" | "cosine" decay after warmup
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            weight_decay=0.01,  # not applied to LayerNorm scales and biases
            grad_clip_norm=1.0,
            # > 0 scores at most that many positions of each row at a time (causal LM) or predicted
            # positions (BERT's MLM and SBO heads), in equal chunks (objectives.chunk_shape), and never
            # holds the [batch, positions, vocab] float32 logits (same loss and gradients; see
            # docs/performance.md). 0: the full logits. Not for T5 or ELECTRA (its generator samples
            # from its logits).
            loss_chunk_size=0,
            seed=0,
            # Train K models as one program: one jitted step vmapped over a leading seed axis of the
            # state and batch (small models leave a CPU idle; a study needs >= 3 seeds). Seed i of K
            # (0-based) is exactly the single run with --config.train.seed=<seed>+i and
            # --config.data.seed=<data.seed>+i (its own init, dropout, prepared examples, data
            # order and masks) and writes WORKDIR/seed_i as that run writes its workdir (config.json,
            # metrics.jsonl, checkpoints), so finetune/score/export/resume take WORKDIR/seed_i.
            # 1: the single run, in WORKDIR itself. Mesh parallelism, one process.
            num_seeds=1,
            log_every=100,
            eval_every=10_000,
            eval_batches=0,  # 0 = the whole validation split
            checkpoint_every=10_000,
            keep_checkpoints=3,
            # A non-finite loss or gradient norm: "stop" ends the run (exit 3) without saving the
            # step; "skip" drops that step's update and counts it in metrics' skipped_steps.
            nonfinite="stop",
            # Read the steps' finiteness flags every N steps (and before each save): each read waits
            # for the device. A "stop" then ends the run up to N-1 steps after the bad one.
            check_finite_every=10,
            debug_nan_step=0,  # testing only: poison this step's loss and gradients with NaN (0 = off)
        )
    )

    # "mesh": jax.jit over a Mesh with NamedSharding; "pmap": jax.pmap + lax.pmean.
    c.parallelism = "mesh"
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: all remaining devices
    # Mesh path: (regex over parameter paths, PartitionSpec entries) pairs, first match wins;
    # see flaxlm/sharding.py. Override with e.g. --config.sharding.rules='((".*", ()),)' (replicate all).
    c.sharding = ml_collections.ConfigDict(dict(rules=sharding.DEFAULT_RULES))
    return c


def from_saved(saved: dict) -> ml_collections.ConfigDict:
    """A config saved by a run (config.json, a checkpoint's config) on today's schema: fields added to
    `base_config()` since that run was written take their defaults (which keep its behaviour)."""
    c = base_config()
    with c.unlocked():
        c.update_from_flattened_dict(_flatten(saved))
    return c


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "rules":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (one line, naming the field) for configs that cannot run."""

    def fail(msg):
        raise ConfigError(msg)

    if c.objective not in OBJECTIVES:
        fail(f"config.objective={c.objective!r} is unknown; choose one of {', '.join(OBJECTIVES)}")
    if c.model.arch not in ARCHS:
        fail(f"config.model.arch={c.model.arch!r} is unknown; choose one of {', '.join(ARCHS)}")
    decoder = c.model.arch == "gpt"
    t5 = c.model.arch == "t5"
    if t5 != (c.objective in SEQ2SEQ_OBJECTIVES):
        fail(
            f"config.objective={c.objective!r} does not fit config.model.arch={c.model.arch!r}: "
            f"use objective {' or '.join(SEQ2SEQ_OBJECTIVES)} with arch 't5' (and only there)"
        )
    if t5:
        if c.model.position_embedding != "relative":
            fail("config.model.position_embedding must be 'relative' for arch 't5'")
        if not 0.0 < c.data.noise_density < 1.0 or c.data.mean_noise_span_length < 1.0:
            fail("config.data.noise_density must be in (0, 1) and mean_noise_span_length >= 1")
        if c.data.num_sentinels < 1:
            fail(f"config.data.num_sentinels={c.data.num_sentinels} must be >= 1 (one per noise span)")
    elif c.model.position_embedding == "relative":
        fail(
            "config.model.position_embedding='relative' is T5's; arch 'bert' and 'gpt' use absolute positions"
        )
    if c.model.share_layers not in SHARE_LAYERS:
        fail(
            f"config.model.share_layers={c.model.share_layers!r} is unknown; "
            f"choose one of {', '.join(SHARE_LAYERS)}"
        )
    if c.model.init not in ("normal", "t5"):
        fail(f"config.model.init={c.model.init!r} is unknown; choose 'normal' (BERT, GPT-2) or 't5' (T5's)")
    if c.model.embedding_size < 0:
        fail(f"config.model.embedding_size={c.model.embedding_size} must be >= 0 (0: hidden_size, BERT)")
    if c.model.position_offset < 0:
        fail(f"config.model.position_offset={c.model.position_offset} must be >= 0 (0: BERT, 2: RoBERTa)")
    if decoder and (c.model.embedding_size or c.model.share_layers != "none"):
        fail(
            "config.model.embedding_size and config.model.share_layers (ALBERT) apply to arch 'bert' only; "
            "set them to 0 and 'none' for arch 'gpt'"
        )
    if not t5 and decoder != (c.objective in DECODER_OBJECTIVES):
        fail(
            f"config.objective={c.objective!r} does not fit config.model.arch={c.model.arch!r}: "
            f"use objective {' or '.join(DECODER_OBJECTIVES)} with arch 'gpt', and an mlm* objective "
            "with arch 'bert'"
        )
    builders = ENCODER_DECODER_BUILDERS if t5 else DECODER_BUILDERS if decoder else ENCODER_BUILDERS
    if c.data.builder not in builders:
        fail(
            f"config.data.builder={c.data.builder!r} is not valid for arch {c.model.arch!r}; "
            f"choose one of {', '.join(builders)}"
        )
    builder = OBJECTIVE_BUILDERS.get(c.objective)
    if builder and c.data.builder != builder:
        fail(
            f"config.objective={c.objective!r} needs config.data.builder={builder!r}, not {c.data.builder!r}"
        )
    if c.objective == "mlm_sop" and c.data.builder != "sop":
        fail("config.objective='mlm_sop' needs config.data.builder='sop'")
    if c.data.builder == "sop" and c.objective != "mlm_sop":
        fail("config.data.builder='sop' makes sentence-order labels; set config.objective='mlm_sop'")
    if c.data.nsp_negatives not in NSP_NEGATIVES:
        choices = ", ".join(NSP_NEGATIVES)
        fail(f"config.data.nsp_negatives={c.data.nsp_negatives!r} is unknown; choose one of {choices}")
    if c.data.nsp_negatives != "any" and c.objective != "mlm_nsp":
        fail(
            f"config.data.nsp_negatives={c.data.nsp_negatives!r} chooses NSP's NotNext segments, but "
            f"config.objective={c.objective!r} has no NSP; set config.objective='mlm_nsp' or drop it"
        )
    if c.objective == "mlm_nsp" and c.data.builder not in ("segment_pair", "sentence_pair"):
        fail(
            f"config.objective='mlm_nsp' needs a pair builder (segment_pair or sentence_pair), "
            f"not {c.data.builder!r}; for {c.data.builder} set config.objective='mlm'"
        )
    if not c.model.pooler and has_pair_head(c.objective):
        fail(
            f"config.model.pooler=False but config.objective={c.objective!r} has an NSP/SOP head that "
            "reads the pooled [CLS]; set config.model.pooler=True or config.objective='mlm'"
        )
    if "://" in c.data.data_dir:
        fail(
            f"config.data.data_dir={c.data.data_dir} is a URL; mount the bucket (gcsfuse BUCKET /mnt/gcs, "
            "as tools/launch/tpu_pod.sh does) and pass a path under the mount"
        )
    if c.data.seq_len > c.model.max_len:
        fail(
            f"config.data.seq_len={c.data.seq_len} exceeds config.model.max_len={c.model.max_len} "
            "position embeddings; lower seq_len or raise model.max_len"
        )
    if c.data.whole_word and c.data.span:
        fail(
            "config.data.whole_word and config.data.span are exclusive (spans are made of whole words); "
            "set one of them to False"
        )
    if c.data.ngram and (c.data.whole_word or c.data.span):
        fail(
            "config.data.ngram is exclusive with config.data.whole_word and config.data.span (n-grams are "
            "made of whole words); set the others to False"
        )
    if c.data.max_ngram < 1:
        fail(f"config.data.max_ngram={c.data.max_ngram} must be >= 1")
    electra = c.objective == "electra"
    if electra != (c.model.generator_size > 0):
        fail(
            "config.objective='electra' needs a generator, config.model.generator_size in (0, 1] (e.g. 0.25)"
            if electra
            else f"config.model.generator_size={c.model.generator_size} builds ELECTRA's generator, which "
            f"only config.objective='electra' trains; set it to 0 or the objective to 'electra'"
        )
    if electra:
        g = c.model.generator_size
        heads = max(1, round(c.model.num_heads * g))
        hidden = round(c.model.hidden_size * g)
        if g > 1.0 or hidden < 1 or round(c.model.mlp_dim * g) < 1:
            fail(f"config.model.generator_size={g} must be in (0, 1] and leave the generator >= 1 wide")
        if hidden % heads:
            fail(
                f"config.model.generator_size={g} gives the generator hidden size {hidden} and {heads} "
                f"head(s) (of hidden_size={c.model.hidden_size}, num_heads={c.model.num_heads}), which do "
                "not divide; choose a fraction that keeps whole heads"
            )
        if c.model.pooler:
            fail(
                "config.objective='electra' trains no [CLS] pooler (its discriminator scores every token); "
                "set --config.model.pooler=False (fine-tuning adds a fresh one, as for BERT)"
            )
        if c.model.share_layers != "none":
            fail("config.objective='electra' supports share_layers='none' only (HF ELECTRA shares none)")
        if c.rtd_weight <= 0:
            fail(f"config.rtd_weight={c.rtd_weight} must be > 0 (the paper's λ is 50)")
    if has_sbo_head(c.objective) and not c.data.span:
        fail(
            "config.objective='mlm_sbo' predicts masked spans from their boundaries and needs span "
            "masking; set --config.data.span=True (and whole_word / ngram False)"
        )
    for name in ("mask_prob", "validation_fraction"):
        if not 0.0 < c.data[name] < 1.0:
            fail(f"config.data.{name}={c.data[name]} must be between 0 and 1")
    if c.data.masking not in ("dynamic", "static"):
        fail(f"config.data.masking={c.data.masking!r} is unknown; choose 'dynamic' or 'static'")
    if c.train.schedule not in ("linear", "cosine"):
        fail(f"config.train.schedule={c.train.schedule!r} is unknown; choose 'linear' or 'cosine'")
    if c.train.nonfinite not in ("stop", "skip"):
        fail(f"config.train.nonfinite={c.train.nonfinite!r} is unknown; choose 'stop' or 'skip'")
    if c.parallelism not in ("mesh", "pmap"):
        fail(f"config.parallelism={c.parallelism!r} is unknown; choose 'mesh' or 'pmap'")
    for name in (
        "batch_size",
        "num_steps",
        "grad_accum_steps",
        "num_seeds",
        "log_every",
        "checkpoint_every",
        "check_finite_every",
    ):
        if c.train[name] < 1:
            fail(f"config.train.{name}={c.train[name]} must be >= 1")
    if c.train.num_seeds > 1 and c.parallelism != "mesh":
        fail(
            f"config.train.num_seeds={c.train.num_seeds} vmaps the seeds in the mesh step; "
            "set --config.parallelism=mesh"
        )
    if not 0 <= c.train.stop_at_step <= c.train.num_steps:
        fail(
            f"config.train.stop_at_step={c.train.stop_at_step} must be between 0 (off) and "
            f"config.train.num_steps={c.train.num_steps}"
        )
    if c.train.loss_chunk_size < 0:
        fail(f"config.train.loss_chunk_size={c.train.loss_chunk_size} must be >= 0 (0: the full logits)")
    if c.train.loss_chunk_size and (t5 or c.objective == "electra"):
        fail(
            f"config.train.loss_chunk_size={c.train.loss_chunk_size} chunks the causal-LM loss of arch 'gpt' "
            f"and BERT's MLM and SBO losses only: set it to 0 for objective {c.objective!r}"
        )
    if c.train.batch_size % c.train.grad_accum_steps:
        fail(
            f"config.train.batch_size={c.train.batch_size} is not divisible by "
            f"config.train.grad_accum_steps={c.train.grad_accum_steps}"
        )
    if not c.model.head_dim and c.model.hidden_size % c.model.num_heads:
        fail(
            f"config.model.hidden_size={c.model.hidden_size} is not divisible by "
            f"config.model.num_heads={c.model.num_heads}"
        )
    if c.model.attention not in ("xla", "dot_product"):
        fail(f"config.model.attention={c.model.attention!r} is unknown; choose 'xla' or 'dot_product'")
    if c.model.attention == "dot_product" and c.model.attention_dropout_rate > 0:
        fail(
            "config.model.attention='dot_product' has no attention dropout; "
            "set --config.model.attention_dropout_rate=0 or --config.model.attention=xla"
        )
    for name, what in (
        ("reader_threads", "threads making training batches; 0: in the training loop's thread"),
        ("reader_workers", "grain worker processes making training batches; 0: none"),
        ("prepare_workers", "Beam worker processes preparing the data; 0: in this process"),
        ("prefetch", "batches made ahead"),
    ):
        if c.data[name] < 0:
            fail(f"config.data.{name}={c.data[name]} must be >= 0 ({what})")
    if c.data.tokenizer_sample_sentences < 0:
        fail(
            f"config.data.tokenizer_sample_sentences={c.data.tokenizer_sample_sentences} must be >= 0 "
            "(sentences the tokenizer is trained on; 0: all of them)"
        )
    if c.data.dupe_factor < 1:
        fail(f"config.data.dupe_factor={c.data.dupe_factor} must be >= 1 (copies of the training data)")
    # Builders whose examples are a fixed function of the corpus (sentence_pair without NSP cuts
    # pairs at random only when they are too long): their copies differ only by static masks.
    fixed = c.data.builder in ("full_sentences", "doc_sentences", "causal") or (
        c.data.builder == "sentence_pair" and not has_pair_head(c.objective)
    )
    if c.data.dupe_factor > 1 and fixed and (decoder or c.data.masking != "static"):
        fix = (
            "raise config.train.num_steps to see the data more often"
            if decoder
            else "set --config.data.masking=static for copies with different masks (dynamic masking "
            "already masks each example anew every epoch)"
        )
        fail(
            f"config.data.dupe_factor={c.data.dupe_factor} would make identical copies: builder "
            f"{c.data.builder!r} has no randomness; set --config.data.dupe_factor=1, or {fix}"
        )
    if not decoder and not t5:
        # BERT masks round(tokens x mask_prob) per sequence, capped at max_predictions (20 for seq 128).
        needed = max(1, round(c.data.seq_len * c.data.mask_prob))
        if c.data.max_predictions < needed:
            fail(
                f"config.data.max_predictions={c.data.max_predictions} caps the masked tokens below "
                f"seq_len={c.data.seq_len} x mask_prob={c.data.mask_prob} = {needed} per sequence; "
                f"set --config.data.max_predictions={needed} (or more)"
            )
