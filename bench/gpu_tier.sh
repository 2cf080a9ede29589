#!/usr/bin/env bash
# The gpu tier, on a CUDA machine with PyTorch but without network, Ray or vLLM (the lent GPU
# machine this project is checked on): installs carried wheels, runs bench/bench_learner.py in
# bf16 on random-weight models of SmolLM2-135M's shape (the default config's workload) and of
# Qwen2.5-1.5B's shape (configs/gpu.yaml's workload), then tests/test_gpu.py (last, so that a
# lease that runs out still brings the figures back).
#
#   bench/gpu_tier.sh WHEELS_DIR SMOLLM2_TOKENIZER_DIR OUT_DIR
#
# WHEELS_DIR: deepspeed (built here with `pip wheel --no-deps deepspeed`), pydantic and its core,
# annotated-types, typing-inspection, hjson, transformers, peft and chatterbot-corpus, for the
# machine's Python. SMOLLM2_TOKENIZER_DIR: the embedded SmolLM2 folder without its weights.
set -uo pipefail
wheels=$1 tokenizer=$2 out=$3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "$wheels"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CROWDLESS_CACHE=/tmp/crowdless-cache
# tiny-llama, the tests' model, is built from the SmolLM2 tokenizer found in the cache
mkdir -p $CROWDLESS_CACHE/models && cp -r "$tokenizer" $CROWDLESS_CACHE/models/smollm2-135m-instruct
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', \
deepspeed.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

for shape in smollm2-135m qwen2.5-1.5b; do
  python3 bench/random_model.py --shape $shape --tokenizer "$tokenizer" --out /tmp/$shape
done
timeout 150 python3 bench/bench_learner.py --objectives dpo,listwise,grpo,ppo --old-logprobs engine \
  --set model.policy=/tmp/smollm2-135m model.dtype=bfloat16 --out learner-gpu-smollm2 2>&1 \
  | tee "$out/bench-smollm2.log" | grep -E "per policy phase|wrote|Error"
timeout 240 python3 bench/bench_learner.py --config gpu --objectives dpo,grpo,ppo --old-logprobs engine \
  --prompts 64 --answers 8 --tokens 128 --set model.policy=/tmp/qwen2.5-1.5b --out learner-gpu-qwen1.5b 2>&1 \
  | tee "$out/bench-qwen.log" | grep -E "per policy phase|wrote|Error"
cp bench/results/learner-gpu-*.json "$out/" 2>/dev/null

timeout 150 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -W ignore 2>&1 | tee "$out/test_gpu.log" | tail -15
nvidia-smi --query-gpu=memory.used --format=csv
