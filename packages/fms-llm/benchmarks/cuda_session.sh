#!/usr/bin/env bash
# The GPU measurements in one prepared run, for a session that is lent a GPU machine (whose python3
# has PyTorch and transformers but no network): causal attention forward + backward (naive, tiled,
# PyTorch's fused kernel), the training step against transformers at GPT-2-small shapes in bf16
# with tokens/s and MFU, and a short `fms-llm train` of the gpt2-124m preset on the synthetic
# corpus (the trainer's own tokens/s and MFU, torch.compile on), and the distributed path (NCCL DDP/FSDP/TP
# throughput and memory, the gpu-marked distributed tests, a torchrun launch). Nothing is installed: the
# checkout's sources go on PYTHONPATH. Results go to $OUT (or ./cuda-results).
#
#   bash packages/fms-llm/benchmarks/cuda_session.sh            # a few minutes on an H100-class GPU
#   DEVICE=cpu SIZE=quick TRAIN_CONFIG=tiny STEPS=3 bash ...    # the same plumbing on a CPU
set -euo pipefail
cd "$(dirname "$0")/../../.."
device=${DEVICE:-cuda}
size=${SIZE:-gpt2}
train_config=${TRAIN_CONFIG:-gpt2-124m}
steps=${STEPS:-20}
out=${OUT:-cuda-results}
mkdir -p "$out"
export PYTHONPATH="packages/fms-ml/src:packages/fms-dl/src:packages/fms-transformer/src:packages/fms-llm/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python=${PYTHON:-python3}

{
  date -u
  if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; fi
  "$python" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
} 2>&1 | tee "$out/machine.txt"

lengths=$([ "$size" = quick ] && echo --quick || true)
"$python" packages/fms-transformer/benchmarks/bench_attention.py --device "$device" --causal \
  --reps 5 $lengths --json "$out/attention.json" 2>&1 | tee "$out/attention.md"

"$python" packages/fms-llm/benchmarks/bench_training.py --device "$device" --size "$size" \
  --precision bf16 --loss own --steps "$steps" 2>&1 | tee "$out/training.md"

"$python" -m fms_llm.cli train --config "$train_config" --corpus synthetic --device "$device" \
  --max-steps "$steps" --out-dir "$out/run" --quiet --set train.checkpoint_every=none \
  --set train.warmup_steps=$((steps / 2)) \
  --set train.eval_every=1000000 2>&1 | tee "$out/train.txt"
cp "$out/run/log.jsonl" "$out/train_log.jsonl"
rm -rf "$out/run"

# The distributed path on the GPU(s): NCCL process groups, one process a GPU (2 if there are 2;
# on one GPU the group has one rank and this measures the path's overhead), DDP, FSDP (and tensor
# parallelism on 2 GPUs) against the plain loop, GPT-2-small shapes in bf16 autocast, with each
# rank's peak allocated memory; then the GPU tests of the distributed package (NCCL runs equal
# the one-GPU run), and one real `torchrun` launch of `fms-llm train` with DDP.
ngpu=$("$python" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
strategies="ddp fsdp"; [ "${ngpu:-0}" -ge 2 ] && strategies="ddp fsdp tp"
"$python" packages/fms-llm/benchmarks/bench_distributed.py --device "$device" \
  --size "$([ "$size" = quick ] && echo tiny || echo gpt2-small)" --strategies $strategies \
  --rounds 3 --steps 5 --json "$out/distributed.json" 2>&1 | tee "$out/distributed.md"
if [ "$device" = cuda ] && "$python" -c "import pytest" 2>/dev/null; then
  "$python" -m pytest -q -m gpu -p no:cacheprovider packages/fms-llm/tests/test_distributed.py \
    packages/fms-llm/tests/test_distributed_memory.py 2>&1 | tee "$out/distributed_gpu_tests.txt"
fi
nproc=$([ "${ngpu:-0}" -ge 2 ] && echo 2 || echo 1)
"$python" -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m fms_llm.cli train \
  --config tiny --corpus synthetic --device "$device" --max-steps "$steps" \
  --out-dir "$out/run-ddp" --quiet --set train.parallel=ddp --set train.checkpoint_every=none \
  --set train.warmup_steps=$((steps / 2)) --set train.eval_every=1000000 2>&1 | tee "$out/train_ddp.txt"
cp "$out/run-ddp/log.jsonl" "$out/train_ddp_log.jsonl"
rm -rf "$out/run-ddp"
