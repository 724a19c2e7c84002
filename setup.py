from setuptools import find_packages, setup

setup(
    name="fairseq_adaptive",
    version="0.1.0",
    description="Adaptive input / adaptive softmax (Baevski & Auli 2019) and DeFINE (Mehta et al. 2020) for fairseq",
    packages=find_packages(include=["fairseq_adaptive", "fairseq_adaptive.*"]),
    python_requires=">=3.10",
    install_requires=["torch", "fairseq-fixed", "sentencepiece"],
    entry_points={"console_scripts": ["fairseq-adaptive-train = fairseq_adaptive.train:cli_main"]},
)
