"""fastrq packaging. The folders ``kernels/`` and ``models/`` install as ``fastrq.kernels`` and ``fastrq.models``
(never as top-level ``kernels`` / ``models``: both names are taken on PyPI)."""

from setuptools import find_packages, setup

SUBPACKAGE_DIRS = {"fastrq.kernels": "kernels", "fastrq.models": "models"}


def _packages() -> list[str]:
    packages = find_packages(include=["fastrq", "fastrq.*"])
    for package, folder in SUBPACKAGE_DIRS.items():
        packages.append(package)
        packages += [f"{package}.{sub}" for sub in find_packages(where=folder)]
    return packages


EXTRAS = {
    "triton": ["triton>=3.0"],
    "models": ["torchvision", "tqdm", "matplotlib", "safetensors", "einops"],
    # vector-quantize-pytorch pinned: the conversion tests and the migration guide are checked against this release
    "bench": ["faiss-cpu", "vector-quantize-pytorch==1.32.0", "pytest-benchmark", "matplotlib"],
    "test": ["pytest", "hypothesis", "pytest-benchmark", "scipy"],
}
EXTRAS["dev"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setup(
    name="fastrq",
    version="0.1.0",
    description="Fast vector quantization and residual vector quantization for neural networks",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=_packages(),
    package_dir={"fastrq": "fastrq", **SUBPACKAGE_DIRS},
    package_data={"fastrq.kernels.cpu": ["*.c"]},  # the native CPU kernel is compiled from source on first use
    install_requires=["torch>=2.4", "numpy", "einops"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["fastrq=fastrq.cli:main"]},
)
