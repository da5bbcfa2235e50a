"""digest: a self-hosted daily arXiv digest, filtered by an LLM against your research interests."""

__version__ = "0.1.0"
