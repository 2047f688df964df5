r"""A continuous-batching engine: requests join and leave the batch at every step.

The loop a server runs is

    engine.add_request(prompt_ids, SamplingParams(max_tokens=64))   # any time, any thread
    while engine.has_unfinished():
        for out in engine.step():        # one forward pass for every running request
            ...                          # out.new_token_ids, out.finished, out.finish_reason

**The scheduler.** Each [step][fms_llm.inference.engine.Engine.step] builds one batch under a
budget of `max_num_batched_tokens` new tokens:

1. *running* requests first, in arrival order: one token each for those decoding, the next chunk
   of the prompt for those still being prefilled (*chunked prefill*: a long prompt is fed over
   several steps so that it never stalls the others' decoding for long);
2. then *waiting* requests are admitted, oldest first, while the budget, `max_num_seqs` and the
   free blocks allow. An admitted request first takes the cached blocks of its longest shared
   prefix ([BlockAllocator.match_prefix][fms_llm.inference.paged.BlockAllocator.match_prefix]),
   so a system prompt common to many requests is computed once.

When a running request needs a block and none is free, the newest running request is
*preempted*: its blocks are released and it goes back to the head of the waiting queue with its
prompt and the tokens generated so far. When it is admitted again those tokens are prefilled
(recomputation, vLLM's default; its full blocks are often still cached and shared back), and it
continues where it was. The tokens a request produces do not depend on this: its next token is
drawn from the logits of its own context, with its own random generator.

**Why the outputs equal decoding alone.** A row's logits depend only on its own tokens: the
packed forward ([PagedModel][fms_llm.inference.runner.PagedModel]) attends each sequence to its
own blocks, and every other operation is row-wise. So greedy decoding under any batching gives
each request the tokens it gets decoded alone (up to floating-point summation order, tested token
for token), and a seeded request draws the same tokens as
[generate][fms_llm.generate.generate] with that seed.

**Speculative decoding.** Given a `draft` model, every decoding request becomes a round of
speculative sampling ([speculative][fms_llm.inference.speculative]) inside the same step: the
draft proposes up to $k$ tokens for all of them together ($k$ batched draft passes over its own
paged cache, which shares the target's block tables, so a block holds the draft's keys and values
at the same slots as the target's), then the target scores each row's last token and its $k$
drafts as one $(k + 1)$-token chunk of the packed forward, and the rejection rule
([verify][fms_llm.inference.speculative.verify]) keeps a prefix of the drafts and adds one token.
A row therefore gains 1 to $k + 1$ tokens per step. The output's distribution is the target's
(greedy: the target's own tokens); a seeded request's draws differ from
[generate][fms_llm.generate.generate]'s with that seed, since the draft consumes random numbers
too. Rejected drafts leave stale keys and values past the accepted length; they are never read
(attention stops at the sequence's length) and are overwritten next step, and only blocks that
both models computed up to their end are shared as prefixes.

**Stopping.** A request finishes with `finish_reason="stop"` on one of its stop token ids (the
stop token is not part of its output), `"length"` after `max_tokens` tokens or at the model's
context length, or `"abort"` when [abort][fms_llm.inference.engine.Engine.abort] is called.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from fms_llm.generate import sample_next
from fms_llm.inference.paged import BlockAllocator, NoFreeBlocks
from fms_llm.inference.runner import Chunk, PagedModel
from fms_llm.inference.speculative import SpeculativeError, _probs, _verify_greedy, _vocab, verify

__all__ = ["Engine", "EngineStats", "FinishReason", "RequestOutput", "SamplingParams"]

FinishReason = Literal["stop", "length", "abort"]


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded.

    Attributes:
        max_tokens: Tokens to generate at most.
        temperature: Softmax temperature; 0 is greedy.
        top_p: Nucleus mass in (0, 1]; 1 keeps every token.
        top_k: Keep the k most likely tokens (`None`: all).
        seed: Seed of the request's own generator (`None`: torch's global generator).
        stop_token_ids: Token ids that end the request (not included in its output).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _positive_int("max_tokens", self.max_tokens)
        if not isinstance(self.temperature, int | float) or not self.temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None:
            _positive_int("top_k", self.top_k)
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))


@dataclass(frozen=True)
class RequestOutput:
    """What one [step][fms_llm.inference.engine.Engine.step] produced for one request.

    Attributes:
        request_id: The id [add_request][fms_llm.inference.engine.Engine.add_request] returned.
        new_token_ids: Tokens generated by this step (empty when the request stopped on a stop
            token, which is not output).
        finished: The request is done and has left the engine.
        finish_reason: `"stop"`, `"length"` or `"abort"` once finished, else `None`.
        num_prompt_tokens: Length of the request's prompt.
        num_output_tokens: Tokens generated so far, a stop token included.
    """

    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None
    num_prompt_tokens: int
    num_output_tokens: int


@dataclass
class EngineStats:
    """Counters since the engine was made (a server's metrics read them).

    Attributes:
        steps: Forward passes run.
        prompt_tokens: Prompt tokens the model fed (shared prefix blocks are not fed again;
            a preempted request's prompt is fed again).
        generated_tokens: Tokens sampled.
        prefix_cached_tokens: Prompt tokens skipped because their blocks were shared.
        preemptions: Requests preempted for lack of blocks.
        aborts: Requests aborted (a client went away, a stop string was found).
        draft_tokens: Draft tokens proposed (speculative decoding only).
        accepted_tokens: Draft tokens the target accepted.
        speculative_rounds: Rows decoded by a speculative round (one target pass each).
    """

    steps: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefix_cached_tokens: int = 0
    preemptions: int = 0
    aborts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    speculative_rounds: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Accepted over proposed draft tokens, $\\hat\\alpha$ (0 when none was proposed)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0


@dataclass
class _Sequence:
    request_id: str
    prompt_len: int
    tokens: list[int]  # prompt + generated
    params: SamplingParams
    generator: torch.Generator | None
    table: list[int] = field(default_factory=list)
    num_computed: int = 0  # positions whose keys and values are in the cache
    num_registered: int = 0  # full blocks indexed for prefix sharing
    num_generated: int = 0  # a stop token included
    draft_computed: int = 0  # positions in the draft's cache (speculative decoding)

    @property
    def output(self) -> list[int]:
        return self.tokens[self.prompt_len :]


class Engine:
    r"""Continuous batching over a paged KV cache for a [GPT][fms_llm.models.GPT] or Llama.

    Args:
        model: A decoder-only model of [fms_llm.models][] (in eval mode; used as it is).
        block_size: Positions per cache block $B$.
        num_blocks: Blocks in the pool. Default: room for `max_num_seqs` sequences of the
            model's full context, $\lceil T_{max} / B \rceil \cdot$ `max_num_seqs`.
        max_num_seqs: Requests running at once at most.
        max_num_batched_tokens: New tokens fed in one step at most (the prefill chunk budget).
        prefix_caching: Share the full blocks of common prefixes between requests.
        draft: A smaller model over the same vocabulary: decode by speculative sampling (see
            above); `None` decodes one token a step.
        num_speculative_tokens: Draft tokens proposed per request and step, $k$ (with `draft`).

    Raises:
        ValueError: a size that is not a positive int.
        SpeculativeError: a draft whose vocabulary size differs from the target's, or whose
            context is shorter.

    Thread safety: [add_request][fms_llm.inference.engine.Engine.add_request] and
    [abort][fms_llm.inference.engine.Engine.abort] may be called from any thread while another
    runs [step][fms_llm.inference.engine.Engine.step]; they take effect at the next step.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        block_size: int = 16,
        num_blocks: int | None = None,
        max_num_seqs: int = 32,
        max_num_batched_tokens: int = 512,
        prefix_caching: bool = True,
        draft: nn.Module | None = None,
        num_speculative_tokens: int = 4,
    ) -> None:
        _positive_int("block_size", block_size)
        _positive_int("max_num_seqs", max_num_seqs)
        _positive_int("max_num_batched_tokens", max_num_batched_tokens)
        max_len = int(getattr(model, "max_seq_len", 0))
        if num_blocks is None:
            num_blocks = math.ceil(max(max_len, 1) / block_size) * max_num_seqs
        _positive_int("num_blocks", num_blocks)
        self.runner = PagedModel(model, num_blocks, block_size)
        self.allocator = BlockAllocator(num_blocks, block_size, prefix_caching=prefix_caching)
        self.block_size, self.num_blocks = block_size, num_blocks
        self.max_seq_len = max_len
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.vocab_size = self.runner.model.config.vocab_size
        self.draft_runner: PagedModel | None = None
        self.num_speculative_tokens = _positive_int(
            "num_speculative_tokens", num_speculative_tokens
        )
        if draft is not None:
            v_draft = _vocab(draft)
            if v_draft != self.vocab_size:
                raise SpeculativeError(
                    f"draft and target must share a vocabulary: target vocab_size="
                    f"{self.vocab_size}, draft vocab_size={v_draft}"
                )
            draft_len = int(getattr(draft, "max_seq_len", 0))
            if draft_len < max_len:
                raise SpeculativeError(
                    f"the draft's context (max_seq_len={draft_len}) is shorter than the "
                    f"target's ({max_len}); it could not follow every request"
                )
            # the same pool geometry as the target's: a sequence's block table serves both
            self.draft_runner = PagedModel(draft, num_blocks, block_size)
        self.stats = EngineStats()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._inbox: list[_Sequence] = []
        self._abort_inbox: set[str] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count()

    # -- requests ----------------------------------------------------------------------------

    def add_request(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
    ) -> str:
        """Queue a request; returns its id (`request_id` if given, else a fresh one).

        Raises:
            ValueError: an empty prompt, a token id outside the vocabulary, a prompt that leaves
                no room to generate within the model's context, or one longer than the whole
                cache pool holds.
        """
        params = params if params is not None else SamplingParams()
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("prompt_ids must hold at least one token, got an empty prompt")
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"prompt_ids must be token ids in [0, {self.vocab_size}), got {bad[0]}"
            )
        if len(prompt) >= self.max_seq_len:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens; the model's context is {self.max_seq_len}"
                " and at least one position must remain for the answer"
            )
        longest = min(len(prompt) + params.max_tokens, self.max_seq_len)
        if math.ceil(longest / self.block_size) > self.num_blocks:
            raise ValueError(
                f"a request of {longest} positions needs {math.ceil(longest / self.block_size)}"
                f" blocks; the KV cache has {self.num_blocks} (raise num_blocks)"
            )
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.runner.device)
            generator.manual_seed(params.seed)
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        seq = _Sequence(rid, len(prompt), prompt, params, generator)
        with self._lock:
            self._inbox.append(seq)
        return rid

    def abort(self, request_id: str) -> None:
        """Stop a request at the next step and free its blocks (an unknown id is ignored: the
        request may have finished meanwhile)."""
        with self._lock:
            self._abort_inbox.add(request_id)

    def has_unfinished(self) -> bool:
        """Whether any request is waiting, running, or queued since the last step."""
        with self._lock:
            return bool(self._inbox or self._waiting or self._running)

    @property
    def num_waiting(self) -> int:
        """Requests queued and not yet running (preempted ones included)."""
        with self._lock:
            return len(self._inbox) + len(self._waiting)

    @property
    def num_running(self) -> int:
        """Requests in the batch."""
        return len(self._running)

    @property
    def num_blocks_in_use(self) -> int:
        """Cache blocks held by running requests."""
        return self.allocator.num_held

    # -- one step ----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Schedule, run one forward pass over the batch, sample, and retire finished requests.

        Returns one [RequestOutput][fms_llm.inference.engine.RequestOutput] per request that
        produced a token or finished in this step (aborted requests included).
        """
        outputs = self._take_inbox()
        batch = self._schedule()
        if not batch:
            return outputs
        proposals = self._propose(batch) if self.draft_runner is not None else {}
        chunks = []
        for seq, n in batch:
            start = seq.num_computed
            proposal = proposals.get(id(seq))
            if proposal is not None:  # the last token and the drafts, all scored
                fed = [seq.tokens[-1], *proposal[0]]
                chunks.append(Chunk(fed, start, seq.table, len(fed)))
            else:
                last = start + n == len(seq.tokens)
                chunks.append(
                    Chunk(seq.tokens[start : start + n], start, seq.table, 1 if last else 0)
                )
        logits = self.runner.forward(chunks)
        self.stats.steps += 1
        for (seq, n), row in zip(batch, logits, strict=True):
            if seq.num_computed < seq.prompt_len:
                self.stats.prompt_tokens += min(n, seq.prompt_len - seq.num_computed)
            proposal = proposals.get(id(seq))
            if proposal is None:
                seq.num_computed += n
                if row.shape[0] == 0:  # mid-prefill: nothing to sample yet
                    self._register(seq)
                    continue
                candidates = [self._sample(seq, row)]
            else:
                drafts, q_rows = proposal
                n_accepted, token = self._verify(seq, row, drafts, q_rows)
                # the cache holds the old last token and the accepted drafts; the draft's cache
                # holds its fed tokens, of which those past the accepted ones are stale
                seq.num_computed += 1 + n_accepted
                seq.draft_computed = min(seq.draft_computed, seq.num_computed)
                self.stats.speculative_rounds += 1
                self.stats.draft_tokens += len(drafts)
                self.stats.accepted_tokens += n_accepted
                candidates = [*drafts[:n_accepted], token]
            new, reason = self._commit(seq, candidates)
            self._register(seq)
            if reason is not None:
                self._retire(seq)
            outputs.append(self._output(seq, new, reason))
        return outputs

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[int]]:
        """Run `prompts` to completion together; returns each one's generated ids, in order."""
        plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(plist)} SamplingParams")
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, plist, strict=True)]
        result: dict[str, list[int]] = {rid: [] for rid in ids}
        while self.has_unfinished():
            for out in self.step():
                if out.request_id in result:
                    result[out.request_id].extend(out.new_token_ids)
        return [result[rid] for rid in ids]

    # -- internals ---------------------------------------------------------------------------

    def _output(self, seq: _Sequence, new: list[int], reason: FinishReason | None) -> RequestOutput:
        return RequestOutput(
            seq.request_id, new, reason is not None, reason, seq.prompt_len, seq.num_generated
        )

    def _take_inbox(self) -> list[RequestOutput]:
        with self._lock:
            self._waiting.extend(self._inbox)
            self._inbox.clear()
            aborted, self._abort_inbox = self._abort_inbox, set()
        outputs = []
        if aborted:
            for queue in (self._running, self._waiting):
                for seq in [s for s in queue if s.request_id in aborted]:
                    queue.remove(seq)
                    self.allocator.release(seq.table)
                    seq.table = []
                    self.stats.aborts += 1
                    outputs.append(self._output(seq, [], "abort"))
        return outputs

    def _retire(self, seq: _Sequence) -> None:
        self._running.remove(seq)
        self.allocator.release(seq.table)
        seq.table = []

    def _blocks_for(self, length: int) -> int:
        return -(-length // self.block_size)

    def _preempt(self, seq: _Sequence) -> None:
        """Send `seq` back to the head of the queue, to be recomputed from its tokens."""
        self._running.remove(seq)
        self.allocator.release(seq.table)
        seq.table, seq.num_computed, seq.num_registered = [], 0, 0
        seq.draft_computed = 0
        self._waiting.appendleft(seq)
        self.stats.preemptions += 1

    def _grow(self, seq: _Sequence, length: int) -> bool:
        """Give running `seq` blocks for `length` positions, preempting the newest running
        requests if the pool is full; `False` if `seq` itself had to be preempted."""
        while len(seq.table) < self._blocks_for(length):
            try:
                seq.table.append(self.allocator.allocate())
            except NoFreeBlocks:
                victim = self._running[-1]
                self._preempt(victim)
                if victim is seq:
                    return False
        return True

    def _schedule(self) -> list[tuple[_Sequence, int]]:
        budget = self.max_num_batched_tokens
        batch: list[tuple[_Sequence, int]] = []
        i = 0
        while i < len(self._running) and budget > 0:
            seq = self._running[i]
            n = min(len(seq.tokens) - seq.num_computed, budget)
            if n == 1 and seq.num_computed == len(seq.tokens) - 1:
                n += self._num_drafts(seq, budget)  # the last token and its drafts
            if not self._grow(seq, seq.num_computed + n):
                continue  # seq was the newest and went back to the queue
            batch.append((seq, n))
            budget -= n
            i += 1
        bs = self.block_size
        while self._waiting and budget > 0 and len(self._running) < self.max_num_seqs:
            seq = self._waiting[0]
            # shared full blocks, leaving at least one token to compute (its logits are needed)
            shared = self.allocator.match_prefix(seq.tokens, (len(seq.tokens) - 1) // bs)
            start = len(shared) * bs
            n = min(len(seq.tokens) - start, budget)
            need = self._blocks_for(start + n) - len(shared)
            if need > self.allocator.num_free:
                self.allocator.release(shared)
                break
            self._waiting.popleft()
            seq.table = shared + [self.allocator.allocate() for _ in range(need)]
            seq.num_computed, seq.num_registered = start, len(shared)
            seq.draft_computed = start  # shared blocks hold the draft's entries too
            self.stats.prefix_cached_tokens += min(start, seq.prompt_len)
            self._running.append(seq)
            batch.append((seq, n))
            budget -= n
        return batch

    def _sample(self, seq: _Sequence, logits: torch.Tensor) -> int:
        p = seq.params
        token = sample_next(
            logits[-1:],
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p if p.top_p < 1 else None,
            generator=seq.generator,
        )
        return int(token.item())

    def _commit(
        self, seq: _Sequence, candidates: list[int]
    ) -> tuple[list[int], FinishReason | None]:
        """Append the sampled tokens in order up to a stop token, `max_tokens` or the context;
        returns the tokens output and the finish reason (`None`: still running)."""
        new: list[int] = []
        for token in candidates:
            seq.num_generated += 1
            self.stats.generated_tokens += 1
            if token in seq.params.stop_token_ids:
                return new, "stop"
            seq.tokens.append(token)
            new.append(token)
            if seq.num_generated >= seq.params.max_tokens or len(seq.tokens) >= self.max_seq_len:
                return new, "length"
        return new, None

    def _register(self, seq: _Sequence) -> None:
        """Index the sequence's full blocks for prefix sharing: those whose positions every
        model (the target, and the draft if any) has computed."""
        done = min(seq.num_computed, len(seq.tokens))
        if self.draft_runner is not None:
            done = min(done, seq.draft_computed)
        n_full = done // self.block_size
        if n_full > seq.num_registered:
            self.allocator.register_full(seq.table, seq.tokens, n_full)
            seq.num_registered = n_full

    def _num_drafts(self, seq: _Sequence, budget: int) -> int:
        """Draft tokens to propose for a decoding `seq` this step: $k$, fewer near its
        `max_tokens`, the context's end or the step's token budget (0: decode one token)."""
        if self.draft_runner is None:
            return 0
        k = min(
            self.num_speculative_tokens,
            seq.params.max_tokens - seq.num_generated - 1,  # a round emits up to k + 1 tokens
            self.max_seq_len - len(seq.tokens) - 1,
            budget - 1,
        )
        return max(k, 0)

    def _propose(
        self, batch: list[tuple[_Sequence, int]]
    ) -> dict[int, tuple[list[int], list[Tensor]]]:
        """Run the draft: it catches up on every row's new tokens (prefill chunks included, so
        its cache follows the target's) and proposes its tokens for the speculative rows, all
        rows in one draft pass per draft position.

        Returns, keyed by `id(seq)` of each speculative row, its draft tokens and (sampling
        only) the draft distributions they were drawn from.
        """
        runner = self.draft_runner
        assert runner is not None
        spec = [
            (seq, n - 1) for seq, n in batch if n > 1 and seq.num_computed == len(seq.tokens) - 1
        ]
        proposals: dict[int, tuple[list[int], list[Tensor]]] = {id(s): ([], []) for s, _ in spec}
        spec_ids = set(proposals)
        for j in range(max((k for _, k in spec), default=1)):
            chunks: list[Chunk] = []
            fed: list[tuple[_Sequence, bool]] = []
            if j == 0:  # the other rows: the draft computes what the target computes this step
                for seq, n in batch:
                    end = seq.num_computed + n
                    if id(seq) not in spec_ids and seq.draft_computed < end:
                        toks = seq.tokens[seq.draft_computed : end]
                        chunks.append(Chunk(toks, seq.draft_computed, seq.table, 0))
                        fed.append((seq, False))
            for seq, k in spec:
                if k <= j:
                    continue
                drafts = proposals[id(seq)][0]
                toks = seq.tokens[seq.draft_computed :] if j == 0 else [drafts[-1]]
                chunks.append(Chunk(toks, seq.draft_computed, seq.table, 1))
                fed.append((seq, True))
            if not chunks:
                break
            logits = runner.forward(chunks)
            for chunk, (seq, proposes), row in zip(chunks, fed, logits, strict=True):
                seq.draft_computed = chunk.start + len(chunk.tokens)
                if proposes:
                    drafts, q_rows = proposals[id(seq)]
                    p = seq.params
                    if p.temperature == 0:
                        drafts.append(int(torch.argmax(row[-1])))
                    else:
                        q = _probs(
                            row[-1:], p.temperature, p.top_k, p.top_p if p.top_p < 1 else None
                        )
                        drafts.append(int(torch.multinomial(q[0], 1, generator=seq.generator)))
                        q_rows.append(q[0])
        return proposals

    def _verify(
        self, seq: _Sequence, logits: Tensor, drafts: list[int], q_rows: list[Tensor]
    ) -> tuple[int, int]:
        """The rejection rule on the target's logits `(k + 1, vocab)` of one row: the number of
        drafts kept and the token after them."""
        d = torch.tensor(drafts, dtype=torch.long, device=logits.device)
        p = seq.params
        if p.temperature == 0:
            return _verify_greedy(logits, d)
        probs = _probs(logits, p.temperature, p.top_k, p.top_p if p.top_p < 1 else None)
        return verify(probs, torch.stack(q_rows), d, seq.generator)
