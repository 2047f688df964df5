"""The `fms-llm` command line: `train`, `generate`, `eval`, `finetune`, `serve` and `tokenizer`.

    fms-llm train                          # the tiny preset: a GPT on the King James Bible
    fms-llm train --config small --set train.max_steps=500 --out-dir runs/s
    fms-llm train --out-dir runs/tiny --resume
    torchrun --nproc-per-node 2 -m fms_llm.cli train --parallel fsdp --out-dir runs/f
    fms-llm generate runs/tiny/model --prompt "And God said" --max-new-tokens 60
    fms-llm eval runs/tiny/model --file some.txt
    fms-llm serve runs/tiny/model --port 8000   # OpenAI-compatible API (fms-llm[serve])
    fms-llm tokenizer train --input corpus.txt --vocab-size 4096 --out tokenizer.json
    fms-llm finetune sft --model runs/tiny/model --out-dir runs/sft --set lora.enabled=true

Bad input (an unknown config key, a missing corpus or model directory, a corrupt checkpoint, a
tokenizer that does not match the model) prints one line naming the problem and exits with
status 2, before any work is done or any file is overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a count of samples, a batch, a window)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain a language model from scratch",
        description=(
            "Pretrain a GPT or Llama from a TOML config (a preset or a file) plus overrides. "
            "On several processes: torchrun --nproc-per-node N -m fms_llm.cli train ..."
        ),
    )
    p.add_argument("--config", default="tiny", help="preset (tiny, small, gpt2-124m) or TOML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=100 (repeatable)",
    )
    p.add_argument("--out-dir", help="run directory (train.out_dir)")
    p.add_argument("--corpus", help="'kjv', 'synthetic', or a text file/folder (data.corpus)")
    p.add_argument(
        "--family",
        choices=("gpt", "llama"),
        help="model.family; 'gpt' also drops the preset's Llama-only model.n_kv_heads",
    )
    p.add_argument("--max-steps", type=int, help="train.max_steps")
    p.add_argument("--device", help="train.device, e.g. cpu or cuda")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training step (forward and loss; evaluation stays eager)",
    )
    p.add_argument(
        "--parallel",
        choices=("auto", "none", "ddp", "fsdp", "tp"),
        help="train.parallel: how processes started by torchrun share the work (auto: ddp)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from fms_llm.train.config import load_config
    from fms_llm.train.pretrain import pretrain

    flags = {
        "train.out_dir": args.out_dir,
        "data.corpus": args.corpus,
        "model.family": args.family,
        "train.max_steps": args.max_steps,
        "train.device": args.device,
        "train.seed": args.seed,
        "train.parallel": args.parallel,
    }
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    if args.family == "gpt":  # GPT-2 has no grouped-query attention: the default preset's goes
        overrides.append("model.n_kv_heads=none")
    if args.compile:
        overrides.append("train.compile=true")
    if args.quiet:
        overrides.append("train.progress=false")
    config = load_config(args.config, [*overrides, *args.overrides])
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    result = pretrain(config, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for the run
        return 0
    m = result.metrics
    print(f"run: {result.out_dir}  model: {result.model_dir}")
    print(
        f"parameters: {result.model.num_parameters():,}  steps: {int(m['step'])}  "
        f"train loss: {m['loss']:.4f}"
    )
    if "eval_loss" in m:
        print(
            f"validation: loss {m['eval_loss']:.4f} nats/token, perplexity "
            f"{m['eval_perplexity']:.2f}, {m['eval_bits_per_byte']:.4f} bits/byte"
        )
    if "eval_gap_to_floor" in m:
        print(
            f"synthetic floor: {m['eval_floor_loss']:.4f} nats/token; whole-document loss "
            f"{m['eval_doc_loss']:.4f}; gap {m['eval_gap_to_floor']:.4f}"
        )
    print(f"sample: {config.sample.prompt}{result.sample}")
    return 0


def _add_generate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="sample text from a saved model directory",
        description="Sample from a saved model directory (config.json, model.safetensors, tokenizer.json).",
    )
    p.add_argument("model_dir", help="a saved model directory")
    p.add_argument("--prompt", default="", help="text to continue (empty: start a new document)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to sample (100)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (0.8)")
    p.add_argument(
        "--top-k", type=int, default=50, help="keep the k likeliest tokens; 0 disables (50)"
    )
    p.add_argument(
        "--top-p", type=float, default=None, help="keep the fewest tokens holding mass p (off)"
    )
    p.add_argument("--seed", type=int, default=None, help="sampling seed (sample i uses seed + i)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="recompute the prefix every step")
    p.add_argument("--num-samples", type=_positive_int, default=1, help="samples to print (1)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.set_defaults(func=_generate)


def _load(model_dir: str, device: str | None) -> tuple[object, object, int | None]:
    from fms_llm.models.hf import load_with_tokenizer
    from fms_llm.train.pretrain import EOS_TOKEN

    model, tokenizer = load_with_tokenizer(model_dir, map_location=device)
    eos = tokenizer.special_tokens.get(EOS_TOKEN)
    return model, tokenizer, eos


def _generate(args: argparse.Namespace) -> int:
    from fms_llm.generate import generate_text

    model, tokenizer, eos = _load(args.model_dir, args.device)
    for i in range(args.num_samples):
        text = generate_text(
            model,  # type: ignore[arg-type]
            tokenizer,  # type: ignore[arg-type]
            args.prompt,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k or None,
            top_p=args.top_p,
            seed=None if args.seed is None else args.seed + i,
            use_cache=not args.no_cache,
            eos_id=eos,
            stop=args.stop,
        )
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + text)
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a saved model over the OpenAI API (needs fms-llm[serve])",
        description=(
            "Serve a saved model directory with an OpenAI-compatible HTTP API "
            "(/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics), "
            "continuous batching over a paged KV cache. Needs pip install fms-llm[serve]."
        ),
    )
    p.add_argument("model_dir", help="a saved model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument(
        "--name", default=None, help="model id clients send (default: the directory's name)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("--block-size", type=_positive_int, default=16, help="KV cache block size (16)")
    p.add_argument(
        "--num-blocks", type=_positive_int, default=None,
        help="KV cache blocks (default: max-num-seqs full contexts)",
    )  # fmt: skip
    p.add_argument(
        "--max-num-seqs", type=_positive_int, default=32, help="requests in the batch (32)"
    )
    p.add_argument(
        "--max-num-batched-tokens", type=_positive_int, default=512,
        help="new tokens per step, the prefill chunk budget (512)",
    )  # fmt: skip
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests waiting beyond the batch before 429 (64)",
    )
    p.add_argument(
        "--quantize", choices=("int8", "int4", "nf4"), default=None,
        help="serve with every linear layer quantised: int8 per channel, int4 per group "
        "(Q4_0's rule), nf4 (default: the saved float weights)",
    )  # fmt: skip
    p.add_argument(
        "--group-size", type=_positive_int, default=None,
        help="inputs per scale for --quantize int4/nf4 (default 32 / 64)",
    )  # fmt: skip
    p.add_argument(
        "--draft", default=None, metavar="DIR",
        help="a saved draft model over the same tokenizer: speculative decoding",
    )  # fmt: skip
    p.add_argument(
        "--num-speculative-tokens", type=_positive_int, default=4,
        help="draft tokens proposed per request and step with --draft (4)",
    )  # fmt: skip
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        from fms_llm.serve import create_app, load_served_model, serve
    except ImportError as exc:
        print(f"fms-llm serve: error: {exc}", file=sys.stderr)
        return 2
    from fms_llm.inference.engine import Engine
    from fms_llm.serve import load_draft_model

    if args.max_queue < 0:
        raise ValueError(f"--max-queue must be >= 0, got {args.max_queue}")
    if args.group_size is not None and args.quantize not in ("int4", "nf4"):
        raise ValueError(
            f"--group-size needs --quantize int4 or nf4, got --quantize {args.quantize}"
        )
    served = load_served_model(
        args.model_dir,
        name=args.name,
        device=args.device,
        quantize=args.quantize,
        group_size=args.group_size,
    )
    if args.draft is not None:
        served.draft = load_draft_model(args.draft, served, device=args.device)
    engine = Engine(
        served.model,
        block_size=args.block_size,
        num_blocks=args.num_blocks,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        draft=served.draft,
        num_speculative_tokens=args.num_speculative_tokens,
    )
    app = create_app(served, engine=engine, max_queue=args.max_queue)
    extras = [f"quantised {served.quantization}"] if served.quantization else []
    extras += [f"draft {args.draft}, k={args.num_speculative_tokens}"] if args.draft else []
    how = f" ({'; '.join(extras)})" if extras else ""
    print(f"fms-llm serve: {served.name!r}{how} on http://{args.host}:{args.port}/v1", flush=True)
    serve(app, host=args.host, port=args.port)
    return 0


def _add_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity and bits per byte of a saved model on a text file",
        description="Evaluate a saved model directory on text files: loss, perplexity, bits per byte.",
    )
    p.add_argument("model_dir", help="a saved model directory")
    p.add_argument("--file", required=True, nargs="+", help="text files or folders")
    p.add_argument(
        "--seq-len", type=_positive_int, default=None, help="window (default: model context)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, help="windows per batch (8)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from fms_llm.data.corpus import CorpusError, text_documents
    from fms_llm.evaluate import window_loss

    model, tokenizer, eos = _load(args.model_dir, args.device)
    docs = text_documents(args.file)
    ids: list[int] = []
    for d in tokenizer.encode_batch(docs, allowed_special="all"):  # type: ignore[attr-defined]
        ids.extend(d)
        if eos is not None:
            ids.append(eos)
    seq_len = args.seq_len or model.config.max_seq_len  # type: ignore[attr-defined]
    if len(ids) < 2:
        raise CorpusError(f"{args.file} holds fewer than 2 tokens")
    if len(ids) - 1 < seq_len:
        print(
            f"fms-llm eval: note: {', '.join(args.file)} holds {len(ids)} tokens, fewer than a "
            f"window of {seq_len} + 1: scored as one window of {len(ids) - 1} predictions "
            "(a loss over so few tokens is a rough figure)",
            file=sys.stderr,
        )
        seq_len = len(ids) - 1
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    metrics = window_loss(
        model,  # type: ignore[arg-type]
        [np.asarray(ids, dtype=np.int64)],
        seq_len=seq_len,
        batch_size=args.batch_size,
        bytes_per_token=n_bytes / len(ids),
    )
    if args.json:
        print(json.dumps(metrics))
    else:
        print(
            f"tokens: {int(metrics['tokens'])}  loss: {metrics['loss']:.4f} nats/token  "
            f"perplexity: {metrics['perplexity']:.2f}  bits/byte: {metrics['bits_per_byte']:.4f}"
        )
    return 0


def _add_finetune(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a saved model: sft, dpo or grpo",
        description="Fine-tune a saved model (SFT, DPO or GRPO; optionally LoRA/QLoRA) from a "
        "TOML config (a preset named like the method, or a file) plus overrides.",
    )
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    helps = {
        "sft": "supervised fine-tuning on the assistant turns of chats",
        "dpo": "direct preference optimisation on (chosen, rejected) answer pairs",
        "grpo": "group relative policy optimisation with an exact-match reward",
    }
    for name, text in helps.items():
        m = methods.add_parser(name, help=text, description=text)
        m.add_argument("--config", help=f"preset (sft, dpo, grpo; default {name}) or TOML file")
        m.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value, e.g. --set lora.enabled=true (repeatable); sections: "
            "model, lora, data, train, method",
        )
        m.add_argument("--model", help="the saved model directory to start from (model.path)")
        m.add_argument("--out-dir", help="run directory (train.out_dir)")
        m.add_argument("--device", help="train.device, e.g. cpu or cuda")
        m.add_argument("--quiet", action="store_true", help="no progress bars")
        m.add_argument("--print-config", action="store_true", help="print the config and exit")
        m.add_argument(
            "--resume",
            action="store_true",
            help="continue the killed run in --out-dir from its newest checkpoint (same config)",
        )
        m.set_defaults(func=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from fms_llm.finetune.run import load_finetune_config, run_finetune

    flags = {"model.path": args.model, "train.out_dir": args.out_dir, "train.device": args.device}
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    overrides.append(f"train.progress={'false' if args.quiet else 'true'}")
    config = load_finetune_config(args.method, args.config, [*overrides, *args.overrides])
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    m = run_finetune(args.method, config, resume=args.resume)
    print(f"{args.method}: model saved to {Path(config.train.out_dir or '.') / 'model'}")
    print(f"train loss: {m['train'].get('loss', float('nan')):.4f}")
    if "held_out_accuracy_after" in m:
        print(
            f"held-out exact-match accuracy: {m['held_out_accuracy_before']:.3f} -> "
            f"{m['held_out_accuracy_after']:.3f}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `fms-llm` with its four sub-commands."""
    from fms_llm import __version__
    from fms_llm.tokenizer.cli import register

    parser = argparse.ArgumentParser(
        prog="fms-llm",
        description="Language models from first principles: train, sample, evaluate, tokenise.",
    )
    parser.add_argument("--version", action="version", version=f"fms-llm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_generate(sub)
    _add_eval(sub)
    _add_finetune(sub)
    _add_serve(sub)
    register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fms-llm` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "tokenizer":
        status: int = args.func(args)
        return status
    try:
        status = args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # every fms error is a ValueError/TypeError subclass whose message names the problem
        print(f"fms-llm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fms-llm {args.command}: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
