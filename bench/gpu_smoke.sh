#!/usr/bin/env bash
# GPU smoke test: on a machine with a CUDA GPU, in under 8 minutes, no download:
#   1. builds a ~0.5B Llama-shaped model from a config (random weights, the embedded tokenizer), bf16;
#   2. DPO steps in bf16 through `accelerate launch` with FSDP2 (configs/accelerate/fsdp2.yaml) and,
#      when DeepSpeed is installed, ZeRO-3 (configs/accelerate/zero3.yaml), on every visible GPU;
#   3. with bitsandbytes installed, 2 QLoRA steps (load_in_4bit, LoRA) on one GPU;
#   4. the scoring bench and the training bench (bench/scoring.py, bench/train_dpo.py);
#   5. writes $OUT/gpu_smoke.json (tokens/s, peak GPU memory, MFU estimate per run) and prints it.
# The attention kernel is sdpa: the packed shared-prefix scorer needs a kernel that takes a 4-D mask
# (docs/scaling.md); flash/flex paths for packed scoring are not there yet.
# Usage: bash bench/gpu_smoke.sh            (OUT defaults to runs/gpu_smoke; PYTHON to .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/gpu_smoke}
STEPS=${STEPS:-8}
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -lt 1 ]; then echo "gpu_smoke: no CUDA GPU visible" >&2; exit 2; fi
mkdir -p "$OUT"
export PERSONALIGN_HOME=${PERSONALIGN_HOME:-$OUT/home} TOKENIZERS_PARALLELISM=false
ACCEL=("$PY" -m accelerate.commands.launch --num_processes "$NGPU" --num_machines 1 --main_process_port 29517)
started=$(date +%s)

echo "== model (~0.5B from a config) and data"
"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from personalign.records.io import write_jsonl
from personalign.curate.synth import synth_records
from personalign.models.loading import load_tokenizer, resolve_model
out = Path(sys.argv[1])
tok = load_tokenizer(resolve_model(None))
cfg = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=1024, intermediate_size=4096,
                           num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8,
                           max_position_embeddings=8192, tie_word_embeddings=True, torch_dtype="bfloat16",
                           eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
model.save_pretrained(out / "model-0.5b")
tok.save_pretrained(out / "model-0.5b")
print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
write_jsonl(synth_records(64 * 8, seed=0), out / "alignx.jsonl")
EOF

run_dpo() {  # name, accelerate config
  local name=$1 config=$2
  echo "== DPO, $name, bf16, $NGPU GPU(s)"
  rm -rf "$OUT/$name"
  "${ACCEL[@]}" --config_file "$config" -m personalign train model="$OUT/model-0.5b" data="$OUT/alignx.jsonl" \
    view.view=ica view.sample_history=true max_length=2048 dtype=bfloat16 bf16=true max_steps="$STEPS" \
    per_device_train_batch_size=4 logging_steps=2 learning_rate=1e-6 report_to=none \
    output_dir="$OUT/$name" overwrite_output_dir=true
}
run_dpo fsdp2 configs/accelerate/fsdp2.yaml
if "$PY" -c "import deepspeed" 2>/dev/null; then
  run_dpo zero3 configs/accelerate/zero3.yaml
else
  echo "== ZeRO-3 skipped: deepspeed is not installed (pip install deepspeed)"
fi

if "$PY" -c "import bitsandbytes" 2>/dev/null; then  # QLoRA: 4-bit weights, LoRA adapters, one GPU
  echo "== QLoRA DPO, 4-bit nf4, 1 GPU"
  rm -rf "$OUT/qlora"
  "$PY" -m personalign train model="$OUT/model-0.5b" data="$OUT/alignx.jsonl" view.view=ica max_length=1024 \
    load_in_4bit=true use_peft=true lora_r=8 bf16=true max_steps=2 per_device_train_batch_size=2 \
    report_to=none output_dir="$OUT/qlora" overwrite_output_dir=true
else
  echo "== QLoRA skipped: bitsandbytes is not installed (pip install bitsandbytes)"
fi

echo "== scoring bench"
"$PY" bench/scoring.py --n 24 --max-length 4096 --max-tokens-per-batch 16384 --device cuda --dtype bfloat16 --model "$OUT/model-0.5b" | tee "$OUT/scoring.txt"
echo "== training bench"
"$PY" bench/train_dpo.py --steps 4 --batch 4 --contenders ours,trl-pre --device cuda | tee "$OUT/train_dpo.txt"

"$PY" - "$OUT" "$started" <<'EOF'
import json, sys, time
from pathlib import Path
import torch
out, started = Path(sys.argv[1]), float(sys.argv[2])
params = sum(p.numel() for p in __import__("safetensors.torch", fromlist=["load_file"]).load_file(
    str(out / "model-0.5b" / "model.safetensors")).values())
name = torch.cuda.get_device_name(0)
peak_tflops = 989.0 if "H100" in name or "H200" in name else 312.0 if "A100" in name else None  # dense bf16
summary = {"gpu": name, "gpus": torch.cuda.device_count(), "parameters": params, "runs": {}}
for run in ("fsdp2", "zero3", "qlora"):
    metrics = out / run / "metrics.jsonl"
    if not metrics.is_file():
        continue
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if "train/loss" in line]
    last = rows[-1]
    tps = last.get("train/tokens_per_second")
    mfu = None if tps is None or peak_tflops is None else 6 * params * tps / (peak_tflops * 1e12 * summary["gpus"])
    summary["runs"][run] = {"loss": last["train/loss"], "tokens_per_second": tps,
                            "peak_memory_gib": last.get("train/peak_memory_gib"), "mfu": mfu}
for bench in ("scoring", "train_dpo"):
    lines = (out / f"{bench}.txt").read_text().splitlines()
    summary[bench] = lines[-1] if lines else None
summary["seconds"] = time.time() - started
(out / "gpu_smoke.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
EOF
