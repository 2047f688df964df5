r"""Tool use learned from scratch: a small model trained here, served by `fms-llm serve`, driven
by fms-agent, with and without its tools, on held-out tasks.

    uv run python packages/fms-agent/experiments/tool_use.py --seed 0   # one seed, one thread
    uv run python packages/fms-agent/experiments/tool_use.py --combine  # table and figure

One seed is the whole pipeline, on one CPU thread:

1. **Tasks** (generated here, seeded). *Arithmetic*: "What is 4821 * 37?" (two or three
   integer operands of 2 to 4 digits, `+`, `-`, `*`); *look-ups*: "How many zalbin are in
   stock?" answered from a stock table of invented items that only the `lookup` tool holds;
   *word problems*: "Ada buys 37 boxes of 24 pens and gives away 112 pens. How many pens does
   she have left?", two calculator calls, the second using the first one's result. The numbers
   are split first: a random fifth of 10..9999 are *test operands*, and no training task uses
   one, so every held-out question has operands (and expressions) never seen in training; the
   held-out look-ups ask for items never asked for in training.
2. **Tokenizer**: byte-level BPE (fms_llm) trained on the training conversations, with a
   pre-tokenisation pattern that cuts numbers into single digits (so a number never seen is
   still made of known tokens, and copying it is copying digits).
3. **Pretraining**: a Llama (rotary positions; `--arch gpt` for learned ones) from fms_llm.models,
   from random weights, next-token loss on every token of task-shaped text in windows of 128
   tokens: the training conversations without their system turn (questions, calls, results,
   answers; the long tools' prompt is the same in all and is left to SFT) and arithmetic facts
   ("4821 * 37 = 178377").
4. **SFT** (fms_llm.finetune.sft): the loss on the assistant turns only, over tool-use
   conversations (the tools' prompt the server adds, from fms_llm.finetune.chat, in the system
   turn; calls as `<tool_call>` blocks; results as `tool` turns) and, for a fifth, the same
   kinds of questions asked without tools and answered directly (so that the model asked
   without tools answers with a number, its best attempt, rather than with a call it cannot
   make).
5. **Serve**: `fms-llm serve MODEL_DIR` in a subprocess on 127.0.0.1 (a free port).
6. **Agent**: [Agent][fms_agent.agent.Agent] over
   [OpenAIBackend][fms_agent.llm.OpenAIBackend] (greedy, `temperature=0`), offered the
   `calculator` and `lookup` tools, on the held-out tasks; then the same model through the same
   server without tools. A task succeeds when the final answer's last integer is the right one.

Each seed writes `docs/figures/fms-agent/tool_use_seed{N}.json` (every answer, the metrics, CPU
and wall times of the training, the server and the client); `--combine` writes
`tool_use.json` (Student-$t$ 95% intervals over the seeds, `fms_ml.experiment.t_ci`, clipped
to [0, 1]) and `tool_use.png`.
"""

from __future__ import annotations

import argparse
import ast
import http.client
import json
import operator
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "docs" / "figures" / "fms-agent"
KINDS = ("arithmetic", "lookup", "word")

# a GPT-2-style pattern with every digit its own piece
DIGIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

SYSTEM = "You are a careful assistant. Use a tool when one helps."

# -- the tools -------------------------------------------------------------------------------

_OPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


def evaluate(expression: str) -> int:
    """The value of an integer expression with `+`, `-`, `*` and parentheses.

    Raises:
        ValueError: anything else (names, calls, division, floats), or a malformed expression.
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"expression {expression!r} does not parse: {e.msg}") from None

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        raise ValueError(
            f"expression {expression!r}: only integers, +, -, * and parentheses are allowed"
        )

    return walk(tree)


def make_tools(table: dict[str, int]) -> list[Any]:
    """The `calculator` and the `lookup` tool over `table` (item -> count in stock)."""
    from fms_agent.tools import tool

    @tool
    def calculator(expression: str) -> str:
        """Integer arithmetic.

        Args:
            expression: e.g. 12 * 34 + 5
        """
        return str(evaluate(expression))

    @tool
    def lookup(item: str) -> str:
        """Items in stock.

        Args:
            item: the item
        """
        if item not in table:
            raise KeyError(f"no item {item!r} in the stock table")
        return str(table[item])

    return [calculator, lookup]


# -- the tasks -------------------------------------------------------------------------------

NAMES = ["Ada", "Bruno", "Chen", "Dalia", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun"]
GOODS = ["pens", "apples", "stamps", "marbles", "cards", "shells", "bolts", "beads"]
SYLLABLES = ["za", "lo", "bin", "ter", "mu", "ka", "rin", "vo", "sel", "dra", "po", "qui"]


@dataclass
class Task:
    """One question with a known answer, and the tool calls a solution makes."""

    kind: str
    question: str
    answer: int
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def split_numbers(rng: random.Random) -> tuple[list[int], list[int]]:
    """Operands 10..9999 split at random: four fifths for training, a fifth for testing."""
    numbers = list(range(10, 10000))
    rng.shuffle(numbers)
    cut = len(numbers) // 5
    return sorted(numbers[cut:]), sorted(numbers[:cut])


def _operand(rng: random.Random, pool: Sequence[int], hi: int) -> int:
    while True:
        n = rng.choice(pool)
        if n < hi:
            return n


def arithmetic_task(rng: random.Random, pool: Sequence[int]) -> Task:
    """Two or three operands of 2 to 4 digits; at most one factor of a product above 99."""
    if rng.random() < 0.7:
        op = rng.choice(["+", "-", "*"])
        a = _operand(rng, pool, 10000)
        b = _operand(rng, pool, 1000 if op == "*" else 10000)
        expr = f"{a} {op} {b}"
    else:
        a, b, c = (_operand(rng, pool, 1000) for _ in range(3))
        expr = f"{a} {rng.choice('+-')} {b} {rng.choice('+-*')} {c}"
    template = rng.choice(["What is {e}?", "Compute {e}.", "How much is {e}?", "Calculate {e}."])
    return Task(
        "arithmetic",
        template.format(e=expr),
        evaluate(expr),
        [("calculator", {"expression": expr})],
    )


def lookup_task(rng: random.Random, items: Sequence[str], table: dict[str, int]) -> Task:
    item = rng.choice(items)
    template = rng.choice(
        ["How many {i} are in stock?", "What is the stock of {i}?", "How many {i} do we have?"]
    )
    return Task("lookup", template.format(i=item), table[item], [("lookup", {"item": item})])


def word_task(rng: random.Random, pool: Sequence[int]) -> Task:
    """Two steps: a product or a sum, then a difference or a sum with a third number."""
    name, goods = rng.choice(NAMES), rng.choice(GOODS)
    a, b = _operand(rng, pool, 100), _operand(rng, pool, 100)
    c = _operand(rng, pool, 1000)
    kind = rng.randrange(3)
    if kind == 0:
        first, op2 = f"{a} * {b}", "-"
        q = (
            f"{name} buys {a} boxes of {b} {goods} and gives away {c} {goods}. "
            f"How many {goods} does {name} have left?"
        )
    elif kind == 1:
        first, op2 = f"{a} * {b}", "+"
        q = (
            f"{name} packs {a} bags with {b} {goods} each and has {c} loose {goods}. "
            f"How many {goods} are there in all?"
        )
    else:
        first, op2 = f"{a} + {b}", "*"
        c = _operand(rng, pool, 100)
        q = (
            f"{name} has {a} red and {b} blue crates with {c} {goods} in every crate. "
            f"How many {goods} are in the crates?"
        )
    r1 = evaluate(first)
    second = f"{r1} {op2} {c}"
    calls = [("calculator", {"expression": first}), ("calculator", {"expression": second})]
    return Task("word", q, evaluate(second), calls)


def stock_table(rng: random.Random, n: int = 60) -> dict[str, int]:
    """`n` invented item names (two or three syllables) with counts 10..9999."""
    table: dict[str, int] = {}
    while len(table) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice([2, 3])))
        table.setdefault(name, rng.randrange(10, 10000))
    return table


def make_splits(seed: int, n_train: int, n_test: dict[str, int]) -> dict[str, Any]:
    """Training and held-out tasks of every kind, and the stock table."""
    rng = random.Random(seed)
    train_nums, test_nums = split_numbers(rng)
    table = stock_table(rng)
    items = list(table)
    rng.shuffle(items)
    train_items, test_items = items[: len(items) * 3 // 4], items[len(items) * 3 // 4 :]
    makers: dict[str, tuple[Callable[[], Task], Callable[[], Task]]] = {
        "arithmetic": (
            lambda: arithmetic_task(rng, train_nums),
            lambda: arithmetic_task(rng, test_nums),
        ),
        "lookup": (
            lambda: lookup_task(rng, train_items, table),
            lambda: lookup_task(rng, test_items, table),
        ),
        "word": (lambda: word_task(rng, train_nums), lambda: word_task(rng, test_nums)),
    }
    share = {"arithmetic": 0.5, "lookup": 0.2, "word": 0.3}
    train = [makers[k][0]() for k in KINDS for _ in range(round(n_train * share[k]))]
    test = {k: [makers[k][1]() for _ in range(n_test[k])] for k in KINDS}
    rng.shuffle(train)
    return {"train": train, "test": test, "table": table, "test_numbers": test_nums}


def conversation(task: Task, tools: Sequence[Any], table: dict[str, int]) -> list[dict[str, Any]]:
    """The task solved, in OpenAI messages: with `tools`, the calls, their results and the
    answer, the tools' prompt in the system turn (as the server sends it); without, the answer."""
    from fms_llm.finetune.chat import add_tools_prompt

    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": task.question},
    ]
    if not tools:
        messages.append({"role": "assistant", "content": str(task.answer)})
        return messages
    for i, (name, args) in enumerate(task.calls):
        result = evaluate(args["expression"]) if name == "calculator" else table[args["item"]]
        fn = {"name": name, "arguments": json.dumps(args)}
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"call_{i}", "type": "function", "function": fn}],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": str(result)})
    messages.append({"role": "assistant", "content": str(task.answer)})
    return add_tools_prompt(messages, [t.openai_schema() for t in tools])


# -- training ----------------------------------------------------------------------------------


def train_model(
    seed: int, splits: dict[str, Any], tools: Sequence[Any], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """Tokenizer, pretraining and SFT; the model saved in `out` (with its chat template)."""
    import numpy as np
    import torch

    from fms_llm.finetune import TrainArgs, sft
    from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
    from fms_llm.finetune.common import run_trainer
    from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig
    from fms_llm.tokenizer import BPETokenizer
    from fms_llm.train.pretrain import EOS_TOKEN

    rng = random.Random(seed + 1000)
    table = splits["table"]
    convs = []
    for t in splits["train"]:
        with_tools = rng.random() >= args.no_tool_share
        convs.append(conversation(t, tools if with_tools else [], table))
    template = ChatTemplate()
    texts = [template.render(c) for c in convs]
    facts = [
        f"{t.calls[0][1]['expression']} = {t.answer}"
        for t in splits["train"]
        if t.kind == "arithmetic"
    ]
    t0 = time.process_time()
    tok = BPETokenizer.train(
        texts[:400] + facts[:400],
        args.vocab,
        special_tokens=[EOS_TOKEN, IM_START, IM_END],
        pattern=DIGIT_PATTERN,
        progress=False,
    )
    t_tok = time.process_time() - t0

    # pretraining: random windows of task-shaped text, every token a target: the conversations
    # without their system turn (the long tools' prompt is the same in every one; SFT sees it)
    # and arithmetic facts
    eos = tok.special_tokens[EOS_TOKEN]
    stream: list[int] = []
    docs = [template.encode(tok, c[1:])[0] for c in convs] + [tok.encode(f) for f in facts]
    order = list(range(len(docs)))
    rng.shuffle(order)
    for i in order:
        stream.extend(docs[i])
        stream.append(eos)
    data = torch.tensor(stream, dtype=torch.long)
    window = args.pretrain_context

    def batch_fn(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = np.random.default_rng([seed, index])
        starts = g.integers(0, len(data) - window - 1, size=args.pretrain_batch)
        x = torch.stack([data[s : s + window] for s in starts])
        y = torch.stack([data[s + 1 : s + window + 1] for s in starts])
        return x, y

    def lm_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        loss: torch.Tensor = model(batch[0], batch[1])
        return loss

    torch.manual_seed(seed)
    shape = {
        "vocab_size": tok.vocab_size,
        "n_layers": args.layers,
        "d_model": args.d_model,
        "n_heads": args.heads,
        "max_seq_len": args.context,
    }
    model = Llama(LlamaConfig(**shape)) if args.arch == "llama" else GPT(GPTConfig(**shape))
    t0 = time.process_time()
    pre = run_trainer(
        model,
        TrainArgs(
            args.pretrain_steps,
            args.pretrain_batch,
            args.lr,
            warmup_steps=20,
            seed=seed,
            log_every=50,
            device="cpu",
        ),
        batch_fn=batch_fn,
        loss_fn=lm_loss,
    )
    t_pre = time.process_time() - t0
    print(f"seed {seed} pretraining: loss {pre['loss']:.3f}, {t_pre:.0f} CPU-s", flush=True)
    t0 = time.process_time()
    ft = sft(
        model,
        tok,
        convs,
        TrainArgs(
            args.sft_steps,
            args.batch,
            args.lr,
            warmup_steps=20,
            seed=seed,
            log_every=50,
            device="cpu",
        ),
    )
    t_sft = time.process_time() - t0
    print(f"seed {seed} SFT: loss {ft.metrics['loss']:.4f}, {t_sft:.0f} CPU-s", flush=True)
    model.eval().save_pretrained(out, tok)
    template.save(out)
    n_params = sum(p.numel() for p in model.parameters())
    lengths = [len(template.encode(tok, c)[0]) for c in convs]
    return {
        "params": n_params,
        "vocab": tok.vocab_size,
        "train_conversations": len(convs),
        "conversation_tokens_mean": float(np.mean(lengths)),
        "conversation_tokens_max": int(max(lengths)),
        "pretrain_tokens": len(stream),
        "pretrain_loss": pre["loss"],
        "sft_loss": ft.metrics["loss"],
        "cpu_s": {"tokenizer": t_tok, "pretrain": t_pre, "sft": t_sft},
    }


# -- serving and the agent ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_dir: Path, name: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`fms-llm serve` on 127.0.0.1 in a subprocess (one thread); waits for /health."""
    exe = shutil.which("fms-llm") or str(Path(sys.executable).parent / "fms-llm")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [exe, "serve", str(model_dir), "--port", str(port), "--name", name, "--device", "cpu",
           "--max-num-seqs", "4"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"fms-llm serve exited with {proc.returncode}: {log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"fms-llm serve did not answer /health in 300 s: {log.read_text()}")
        time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}/v1"


_INT = re.compile(r"-?\d+")


def judge(answer: str | None, expected: int) -> bool:
    """Success: the answer's last integer is the expected one."""
    found = _INT.findall(answer or "")
    return bool(found) and int(found[-1]) == expected


def evaluate_agent(
    base_url: str, name: str, tasks: Sequence[Task], tools: Sequence[Any]
) -> list[dict[str, Any]]:
    """Run the agent on each task (greedy); one record per task."""
    from fms_agent.agent import Agent
    from fms_agent.llm import BackendError, OpenAIBackend

    backend = OpenAIBackend(base_url, name, timeout=120, temperature=0.0, max_tokens=64)
    agent = Agent(backend, tools, system=SYSTEM, max_steps=5 if tools else 1)
    records = []
    for t in tasks:
        try:
            result = agent.run(t.question)
        except BackendError as e:  # the transcript outgrew the context: a failure, not a crash
            records.append(
                {"question": t.question, "expected": t.answer, "answer": None, "success": False,
                 "calls": [], "calls_as_expected": False, "stopped": f"error: {e}"[:300]}
            )  # fmt: skip
            continue
        made = [(c.name, c.arguments) for s in result.steps for c in s.message.tool_calls]
        expected = [(n, json.dumps(a)) for n, a in t.calls]
        records.append(
            {
                "question": t.question,
                "expected": t.answer,
                "answer": result.answer,
                "success": judge(result.answer, t.answer),
                "calls": made,
                "calls_as_expected": made == expected,
                "stopped": result.stopped,
            }
        )
    return records


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    wall0, cpu0 = time.monotonic(), time.process_time()
    n_test = {"arithmetic": args.test, "lookup": args.test_other, "word": args.test_other}
    splits = make_splits(seed, args.train, n_test)
    tools = make_tools(splits["table"])
    work = Path(tempfile.mkdtemp(prefix=f"tool_use_{seed}_"))
    model_dir = work / "toolformer"
    training = train_model(seed, splits, tools, args, model_dir)
    cpu_train = time.process_time() - cpu0
    proc, url = start_server(model_dir, "toolformer", work / "server.log")
    t_eval = time.process_time()
    try:
        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for kind in KINDS:
            results[kind] = {
                "tools": evaluate_agent(url, "toolformer", splits["test"][kind], tools),
                "no_tools": evaluate_agent(url, "toolformer", splits["test"][kind], []),
            }
            rate = {c: sum(r["success"] for r in v) / len(v) for c, v in results[kind].items()}
            print(
                f"seed {seed} {kind:10s} with tools {rate['tools']:.3f}  without {rate['no_tools']:.3f}",
                flush=True,
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    cpu_client = time.process_time() - t_eval
    server = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_server = server.ru_utime + server.ru_stime
    shutil.rmtree(work, ignore_errors=True)
    metrics = {
        kind: {
            cond: {
                "success": sum(r["success"] for r in recs) / len(recs),
                "calls_as_expected": sum(r["calls_as_expected"] for r in recs) / len(recs),
                "answered_a_number": sum(bool(_INT.search(r["answer"] or "")) for r in recs)
                / len(recs),
                "n": len(recs),
            }
            for cond, recs in results[kind].items()
        }
        for kind in KINDS
    }
    return {
        "seed": seed,
        "config": vars(args),
        "training": training,
        "metrics": metrics,
        "cpu_s": {
            "train": cpu_train,
            "agent_client": cpu_client,
            "server": cpu_server,
            "total": time.process_time() - cpu0 + cpu_server,
        },
        "wall_s": time.monotonic() - wall0,
        "load_average": os.getloadavg(),
        "results": results,
        "table": splits["table"],
        "example_train": [asdict(t) for t in splits["train"][:3]],
    }


# -- combining seeds -------------------------------------------------------------------------


def _right_tools(records: Sequence[dict[str, Any]], kind: str) -> float:
    """The share of runs whose calls were the solution's tools, as many as it makes (whatever
    the arguments): the format learned, apart from copying the right values."""
    want = {"arithmetic": ["calculator"], "lookup": ["lookup"], "word": ["calculator"] * 2}[kind]
    return sum([c[0] for c in r["calls"]] == want for r in records) / len(records)


def combine(seeds: Sequence[int], name: str = "tool_use") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fms_ml.experiment import t_ci

    runs = [json.loads((OUT / f"{name}_seed{s}.json").read_text()) for s in seeds]
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in KINDS:
        summary[kind] = {}
        for cond in ("tools", "no_tools"):
            values = [r["metrics"][kind][cond]["success"] for r in runs]
            ci = t_ci(values)
            summary[kind][cond] = {
                "mean": ci.estimate,
                "low": max(0.0, ci.low),
                "high": min(1.0, ci.high),
                "per_seed": values,
                "n_per_seed": runs[0]["metrics"][kind][cond]["n"],
                "calls_as_expected": [r["metrics"][kind][cond]["calls_as_expected"] for r in runs],
                "answered_a_number": [r["metrics"][kind][cond]["answered_a_number"] for r in runs],
                "calls_of_the_right_tools": [
                    _right_tools(r["results"][kind][cond], kind) for r in runs
                ],
            }
            print(
                f"{kind:10s} {cond:8s} {ci.estimate:.3f} [{max(0.0, ci.low):.3f}, {min(1.0, ci.high):.3f}]  per seed {values}"
            )
    cpu = {k: [r["cpu_s"][k] for r in runs] for k in runs[0]["cpu_s"]}
    record = {
        "seeds": list(seeds),
        "summary": summary,
        "cpu_s_per_seed": cpu,
        "wall_s_per_seed": [r["wall_s"] for r in runs],
        "load_average": [r["load_average"] for r in runs],
        "training": [r["training"] for r in runs],
        "config": runs[0]["config"],
    }
    (OUT / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.38
    labels = {"tools": "with tools", "no_tools": "without tools"}
    for j, cond in enumerate(("tools", "no_tools")):
        xs = [i + (j - 0.5) * width for i in range(len(KINDS))]
        means = [summary[k][cond]["mean"] for k in KINDS]
        errs = [
            [m - summary[k][cond]["low"] for k, m in zip(KINDS, means, strict=True)],
            [summary[k][cond]["high"] - m for k, m in zip(KINDS, means, strict=True)],
        ]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=labels[cond])
    ax.set_xticks(range(len(KINDS)), ["arithmetic", "table look-up", "word problem (2 calls)"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out task success")
    ax.set_title(
        f"A {runs[0]['training']['params'] / 1e6:.2f}M-parameter "
        f"{'Llama' if runs[0]['config'].get('arch') == 'llama' else 'GPT'} trained here, served by "
        f"fms-llm, driven by fms-agent ({len(runs)} seeds, 95% t intervals)",
        fontsize=8,
    )
    ax.axhline(0.9, color="grey", lw=0.6, ls="--")
    ax.axhline(0.2, color="grey", lw=0.6, ls=":")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=130)
    print(f"wrote {OUT / (name + '.json')} and {OUT / (name + '.png')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="the seed to run")
    p.add_argument("--combine", action="store_true", help="combine the seeds' JSON files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to combine")
    p.add_argument("--train", type=int, default=3000, help="training tasks")
    p.add_argument("--test", type=int, default=40, help="held-out arithmetic tasks")
    p.add_argument("--test-other", type=int, default=20, help="held-out look-ups, word problems")
    p.add_argument("--no-tool-share", type=float, default=0.2, help="training tasks without tools")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument(
        "--arch", choices=["llama", "gpt"], default="llama", help="RoPE or learned positions"
    )
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--batch", type=int, default=8, help="SFT batch")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--pretrain-context", type=int, default=128, help="pretraining window")
    p.add_argument("--pretrain-batch", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--out", type=Path, default=OUT, help="where the JSON goes")
    p.add_argument("--name", default="tool_use", help="file stem of the JSON and the figure")
    args = p.parse_args()
    if args.combine:
        combine(args.seeds, args.name)
        return
    record = run_seed(args.seed, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}_seed{args.seed}.json").write_text(
        json.dumps(record, indent=1, default=str) + "\n"
    )
    print(
        f"seed {args.seed}: {record['cpu_s']['total'] / 60:.1f} CPU-min, {record['wall_s'] / 60:.1f} wall-min"
    )


if __name__ == "__main__":
    main()
