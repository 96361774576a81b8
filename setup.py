"""prunenet: structured FFN compression of LLMs with no user data (activation rows on self-written probes)."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="prunenet",
    version="0.1.0",
    description="Structured FFN pruning of LLMs with no user data: rows ranked on text the model writes itself, "
                "output matrices refitted; the PruneNet (ICLR 2025) policy one flag away",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # `kernels/` installs as `prunenet_kernels`: a top-level `kernels` would shadow the Hugging Face
    # package of that name, which transformers probes for.
    packages=[*find_packages(include=["prunenet", "prunenet.*"]),
              *("prunenet_kernels" + name.removeprefix("kernels")
                for name in find_packages(include=["kernels", "kernels.*"]))],
    package_dir={"prunenet_kernels": "kernels"},
    install_requires=[
        "torch>=2.4,<3",
        "triton>=3.0",  # the op files define their kernels at import; the twins run without a GPU
        "transformers>=4.46",
        "safetensors>=0.4.3",
        "tqdm>=4.60",
        # The embedded default model is a GGUF file; transformers needs these to read it.
        "gguf>=0.10",
        "accelerate>=0.30",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-benchmark>=4", "scipy>=1.10"],
        "eval": ["lm-eval>=0.4.5"],
        "plot": ["matplotlib>=3.7"],
        "farm": ["ray>=2.9", "tomli>=2; python_version < '3.11'"],
        "dev": ["ruff>=0.6", "mypy>=1.10", "pre-commit>=3"],
    },
    entry_points={"console_scripts": ["prunenet=prunenet.cli:main"]},
)
