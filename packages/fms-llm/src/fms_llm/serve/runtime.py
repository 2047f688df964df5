"""The engine behind the server: a background thread steps it, asyncio queues carry the tokens.

The HTTP handlers run on an asyncio event loop; the model runs on a thread of its own so that
a forward pass never blocks the loop. [AsyncEngine][fms_llm.serve.runtime.AsyncEngine] owns both
ends: `submit` adds a request to the [Engine][fms_llm.inference.engine.Engine] and returns an
`asyncio.Queue` that receives the request's
[RequestOutput][fms_llm.inference.engine.RequestOutput]s as the thread produces them
(`loop.call_soon_threadsafe`), and `abort` cancels it. The thread sleeps while there is nothing
to do. The number of requests in flight is bounded (`max_num_seqs` running plus `max_queue`
waiting); beyond it `submit` refuses with a 429 error at once, so a burst cannot pile up
unbounded work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fms_llm.finetune.chat import IM_END, ChatTemplate, saved_chat_setup
from fms_llm.inference.engine import Engine, RequestOutput, SamplingParams
from fms_llm.models.gpt import GPT
from fms_llm.serve.protocol import APIError
from fms_llm.tokenizer import BPETokenizer

__all__ = ["AsyncEngine", "ServedModel", "load_draft_model", "load_served_model"]


@dataclass
class ServedModel:
    """A model with what serving it needs.

    Attributes:
        name: The id clients send as `model`.
        model: The language model.
        tokenizer: Its tokenizer.
        chat_template: How chats are rendered; `None` when the tokenizer lacks ChatML's special
            tokens (then `/v1/chat/completions` answers 400 and `/v1/completions` still works).
        stop_token_ids: Ids that end every answer (the end-of-text token, and `<|im_end|>` for
            chats).
        supports_tools: The chat template renders tool calls (`<tool_call>`).
        created: Unix time the model was loaded (for `/v1/models`).
        quantization: The weight format of the model's linear layers (`"int8"`, `"int4"`,
            `"nf4"`), or `None` for the saved float weights.
        draft: A draft model for speculative decoding (see
            [load_draft_model][fms_llm.serve.runtime.load_draft_model]), or `None`.
    """

    name: str
    model: GPT
    tokenizer: BPETokenizer
    chat_template: ChatTemplate | None
    stop_token_ids: tuple[int, ...]
    supports_tools: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    quantization: str | None = None
    draft: GPT | None = None

    @property
    def chat_stop_ids(self) -> tuple[int, ...]:
        """Stop ids of a chat answer: the model's, plus `<|im_end|>`."""
        end = self.tokenizer.special_tokens.get(IM_END)
        return self.stop_token_ids + ((end,) if end is not None else ())


def load_served_model(
    model_dir: str | Path,
    *,
    name: str | None = None,
    device: str | None = None,
    quantize: str | None = None,
    group_size: int | None = None,
) -> ServedModel:
    """Load a saved model directory (config.json, model.safetensors, tokenizer.json and, when
    present, tokenizer_config.json / generation_config.json).

    With `quantize` (`"int8"`, `"int4"` or `"nf4"`) every linear layer, the head included, is
    replaced by its [QuantizedLinear][fms_llm.quantize.QuantizedLinear] as
    [quantize_model][fms_llm.quantize.quantize_model] does (`group_size`: inputs per scale of
    the 4-bit formats); the engine runs the quantised model as it is.

    The chat template is the saved `chat_template` when it is ChatML (what
    [ChatTemplate.save][fms_llm.finetune.chat.ChatTemplate.save] writes), and ChatML by default
    when the tokenizer has `<|im_start|>` and `<|im_end|>`; stop ids come from
    `generation_config.json`'s `eos_token_id` (else `<|endoftext|>`).

    Raises:
        ModelFileError: (a `ValueError`) a missing or malformed file, a tokenizer that does not
            match the model, or a saved chat template that is not ChatML.
        QuantizationError: (a `ValueError`) an unknown format, or a group size that does not
            divide a layer's input width.
    """
    from fms_llm.models.hf import load_with_tokenizer
    from fms_llm.quantize import FORMATS, QuantizationError, quantize_model

    if quantize is not None and quantize not in FORMATS:
        raise QuantizationError(f"quantize must be one of {FORMATS} or None, got {quantize!r}")
    directory = Path(model_dir)
    model, tokenizer = load_with_tokenizer(directory, map_location=device)
    if quantize is not None:
        quantize_model(model, quantize, group_size=group_size)  # type: ignore[arg-type]
    template, eos_ids = saved_chat_setup(directory, tokenizer.special_tokens)
    return ServedModel(
        name=name or directory.resolve().name,
        model=model,
        tokenizer=tokenizer,
        chat_template=template,
        stop_token_ids=eos_ids,
        supports_tools=template is not None and "tool_call" in template.jinja,
        quantization=quantize,
    )


def load_draft_model(
    draft_dir: str | Path, served: ServedModel, *, device: str | None = None
) -> GPT:
    """Load a draft model for speculative decoding of `served` and check that it can be paired.

    The draft must predict the same tokens: its vocabulary size must be the target's and, when
    its directory holds a `tokenizer.json`, that tokenizer must be the target's (same tokens,
    same ids, same special tokens). Its context must be at least the target's.

    Raises:
        ModelFileError: (a `ValueError`) a missing or malformed draft directory.
        SpeculativeError: (a `ValueError`) a draft whose vocabulary, tokenizer or context does
            not match the target's.
    """
    from fms_llm.inference.speculative import SpeculativeError
    from fms_llm.models.hf import ModelFileError, load_pretrained

    directory = Path(draft_dir)
    if not directory.is_dir():
        raise ModelFileError(f"draft directory {directory} does not exist")
    draft = load_pretrained(directory, map_location=device).eval()
    target = served.model.config
    if draft.config.vocab_size != target.vocab_size:
        raise SpeculativeError(
            f"the draft in {directory} has vocab_size={draft.config.vocab_size} but the target "
            f"{served.name!r} has vocab_size={target.vocab_size}: a draft must share the "
            "target's vocabulary"
        )
    tok_path = directory / "tokenizer.json"
    if tok_path.is_file():
        tok = BPETokenizer.load(tok_path)
        mine = served.tokenizer
        if tok.vocab != mine.vocab or tok.special_tokens != mine.special_tokens:
            raise SpeculativeError(
                f"the draft's tokenizer {tok_path} is not the target's: same vocabulary size "
                f"({target.vocab_size}) but different tokens or ids"
            )
    if draft.config.max_seq_len < target.max_seq_len:
        raise SpeculativeError(
            f"the draft in {directory} has max_seq_len={draft.config.max_seq_len}, shorter "
            f"than the target's {target.max_seq_len}"
        )
    return draft


class AsyncEngine:
    """An [Engine][fms_llm.inference.engine.Engine] stepped by a background thread.

    Args:
        engine: The engine to drive.
        max_queue: Requests allowed to wait beyond the `max_num_seqs` running ones.
    """

    def __init__(self, engine: Engine, *, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.capacity = engine.max_num_seqs + max_queue
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of the last steps
        self.requests_total = 0
        self.rejected_total = 0
        self.error: BaseException | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the stepping thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="fms-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread after its current step."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- requests ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests submitted and not finished."""
        with self._lock:
            return len(self._queues)

    def submit(
        self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]
    ) -> list[tuple[str, asyncio.Queue[Any]]]:
        """Add requests (all or none); each gets a queue of its outputs, ending with a finished
        one (or an exception if the engine failed).

        Must be called on the event loop that will read the queues.

        Raises:
            APIError: 429 when the queue is full; 400 when the engine refuses a prompt.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if len(self._queues) + len(prompts) > self.capacity:
                self.rejected_total += 1
                raise APIError(
                    429,
                    f"the server is at capacity ({self.capacity} requests in flight); retry later",
                    type_="rate_limit_error",
                    code="queue_full",
                )
            self.requests_total += 1
        out: list[tuple[str, asyncio.Queue[Any]]] = []
        try:
            for prompt, p in zip(prompts, params, strict=True):
                queue: asyncio.Queue[Any] = asyncio.Queue()
                rid = f"r{id(queue):x}-{time.monotonic_ns():x}"
                with self._lock:
                    self._queues[rid] = (loop, queue)
                out.append((rid, queue))
                self.engine.add_request(prompt, p, request_id=rid)
        except ValueError as exc:
            for rid, _ in out:
                self.abort(rid)
            raise APIError(400, str(exc), param="prompt", code="invalid_prompt") from None
        self._wake.set()
        return out

    def abort(self, request_id: str) -> None:
        """Cancel a request (its queue gets no more outputs)."""
        with self._lock:
            self._queues.pop(request_id, None)
        self.engine.abort(request_id)
        self._wake.set()

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Generated tokens per second over the last `window` seconds."""
        now = time.monotonic()
        with self._lock:
            total = sum(n for t, n in self._recent if now - t <= window)
        return total / window

    # -- the thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.engine.has_unfinished():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # a bug or an out-of-memory: fail every request, keep serving
                self.error = exc
                self._fail_all(exc)
                continue
            self._deliver(outputs)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        now = time.monotonic()
        n_tokens = 0
        with self._lock:
            for out in outputs:
                n_tokens += len(out.new_token_ids)
                target = self._queues.get(out.request_id)
                if out.finished:
                    self._queues.pop(out.request_id, None)
                if target is not None:
                    loop, queue = target
                    loop.call_soon_threadsafe(queue.put_nowait, out)
            self._recent.append((now, n_tokens))
            while self._recent and now - self._recent[0][0] > 60:
                self._recent.popleft()

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            targets = list(self._queues.items())
            self._queues.clear()
        for rid, (loop, queue) in targets:
            self.engine.abort(rid)
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        # the aborts run at the next step; step once so the engine frees their blocks
        try:
            self.engine.step()
        except Exception:  # the engine is broken beyond one step; the error is already reported
            self._stop.set()
