#!/usr/bin/env bash
# GPU smoke test, made to work the first time a GPU is lent (a short loan, no network there):
#   0. the packages the machine's image lacks (bench/gpu_wheels.txt) are installed from the wheels
#      bench/gpu_wheels.sh downloaded here (carried as bench/.gpu-wheels), --no-index --no-deps
#      --target under $WORK; personalign runs from the working tree (PYTHONPATH), not installed;
#   1. builds Llama-shaped models from configs, random weights, bf16: ~0.5B and ~1.2B, with the
#      tokenizer of personalign.testing (trained in a second; the model keeps a 49,152-token vocabulary,
#      SmolLM2's, so the LM head costs what it costs at that size). No embedded model is needed;
#   2. DPO in bf16 through `accelerate launch` with FSDP2 (configs/accelerate/fsdp2.yaml) on every
#      visible GPU, both sizes, with the chunked LM head (the default) and with the head in one piece
#      (logits_chunk_size=null); the reference pass is scored by the sharded model (its time and
#      peak memory are read from the run's log); and ZeRO-3 when DeepSpeed is there;
#   3. with bitsandbytes installed, 2 QLoRA steps (load_in_4bit, LoRA) on one GPU;
#   4. the scoring bench and the training bench (bench/scoring.py, bench/train_dpo.py);
#   5. writes gpu_smoke.json (tokens/s, peak GPU memory, MFU per run: 6 × parameters × tokens/s over
#      the GPUs' dense bf16 peak, attention FLOPs not counted; the reference pass) and prints it.
# The attention kernel is sdpa: the packed shared-prefix scorer needs a kernel that takes a 4-D mask
# (docs/scaling.md).
#
# Usage: bash bench/gpu_smoke.sh             on the GPU machine (the device call: docs/scaling.md)
#        bash bench/gpu_smoke.sh --rehearse  here, on CPU, before a loan: a clean virtualenv of this
#          machine's Python with only packages the GPU image lists (CPU torch; the image's versions
#          where KINDS.md gives them) plus bench/gpu_wheels.txt at its versions, then the same steps,
#          small: 2 CPU processes (DDP over gloo through torchrun: accelerate neither shards on CPU nor
#          launches several CPU processes itself), a tiny model.
# WORK (models, runs) defaults to runs/gpu_smoke; the summary goes to $OUT too when it is set (the
# device tool's folder that comes back); PYTHON (on the GPU machine) defaults to python3.
set -euo pipefail
cd "$(dirname "$0")/.."
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
WORK=${WORK:-runs/gpu_smoke}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=${OUT:-$WORK}  # the device tool sets OUT: what is written there comes back
started=$(date +%s)

if [ "$REHEARSE" = 1 ]; then
  echo "== rehearsal: a clean virtualenv with the GPU image's packages (CPU torch) and the wheel list"
  VENV="$WORK/rehearse-venv"
  python3.11 -m venv --clear "$VENV"
  PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  "${PIP[@]}" torch==2.13.0
  "${PIP[@]}" transformers==5.17.0 accelerate==1.15.0 huggingface_hub==1.33.0 safetensors==0.8.0 \
    tokenizers==0.23.2 peft pyarrow pandas typer rich pyyaml httpx sacrebleu tensorboard xxhash fsspec requests \
    tqdm filelock jinja2 psutil packaging click joblib regex
  "${PIP[@]}" --no-deps -r bench/gpu_wheels.txt
  PY="$VENV/bin/python"
  DEVICE=cpu DTYPE=float32 NGPU=2 STEPS=2 MAXLEN=256 BATCH=2 SCORE_N=4 SCORE_LEN=2048
  SIZES="tiny"
  LAUNCH=(--multi_gpu --num_processes 2 --mixed_precision no --dynamo_backend no)  # torchrun, gloo
  export ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1
else
  PY=${PYTHON:-python3}
  DEVICE=cuda DTYPE=bfloat16 STEPS=${STEPS:-8} MAXLEN=2048 BATCH=4 SCORE_N=24 SCORE_LEN=4096
  SIZES="0.5b 1.2b"
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  if [ "$NGPU" -lt 1 ]; then echo "gpu_smoke: no CUDA GPU visible" >&2; exit 2; fi
  if ! "$PY" -c "import pydantic, datasets, trl, gguf, nltk, simplemma, orjson" 2>/dev/null; then
    if ! ls bench/.gpu-wheels/*.whl >/dev/null 2>&1; then
      echo "gpu_smoke: packages missing and no wheels: run 'bash bench/gpu_wheels.sh' here and carry bench/.gpu-wheels" >&2
      exit 2
    fi
    echo "== installing $(ls bench/.gpu-wheels/*.whl | wc -l) wheels into $WORK/site (no index, no dependencies)"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --target "$WORK/site" bench/.gpu-wheels/*.whl
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  LAUNCH=(--num_processes "$NGPU" --config_file configs/accelerate/fsdp2.yaml)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PERSONALIGN_HOME="$WORK/home" TOKENIZERS_PARALLELISM=false
"$PY" -c "import personalign, pydantic, datasets, trl, transformers, torch; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
ACCEL=("$PY" -m accelerate.commands.launch --num_machines 1 --main_process_port 29517)

echo "== models from configs (random weights) and data"
"$PY" - "$WORK" "$DEVICE" "$DTYPE" $SIZES <<'EOF'
import json
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from personalign.curate.synth import synth_records
from personalign.records.io import write_jsonl
from personalign.testing import tiny_tokenizer

out, device, dtype, sizes = Path(sys.argv[1]), sys.argv[2], getattr(torch, sys.argv[3]), sys.argv[4:]
tok = tiny_tokenizer()
shapes = {"tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tok)),
          "0.5b": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       num_key_value_heads=8, vocab_size=49152),
          "1.2b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=49152)}
params = {}
for size in sizes:
    cfg = AutoConfig.for_model("llama", max_position_embeddings=8192, tie_word_embeddings=True, dtype=str(dtype).split(".")[-1],
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                               pad_token_id=tok.pad_token_id, **shapes[size])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(out / f"model-{size}")
    tok.save_pretrained(out / f"model-{size}")
    params[size] = sum(p.numel() for p in model.parameters())
    print(f"model-{size}: {params[size] / 1e9:.3f}B parameters")
    del model
(out / "parameters.json").write_text(json.dumps(params))
write_jsonl(synth_records(64 * 8, seed=0), out / "alignx.jsonl")
EOF

run_dpo() {  # run name, model size, launch options...; $KEYS: more train settings (key=value)
  local name=$1 size=$2
  shift 2
  echo "== DPO, $name, $DTYPE, $NGPU process(es) ${KEYS:-}"
  rm -rf "${WORK:?}/$name"
  local precision=(dtype=bfloat16 bf16=true)
  [ "$DTYPE" = float32 ] && precision=(dtype=float32)
  # shellcheck disable=SC2086  # KEYS holds several words
  "${ACCEL[@]}" "$@" -m personalign train model="$WORK/model-$size" data="$WORK/alignx.jsonl" \
    view.view=ica view.sample_history=true max_length="$MAXLEN" "${precision[@]}" max_steps="$STEPS" \
    per_device_train_batch_size="$BATCH" logging_steps=1 learning_rate=1e-6 report_to=none \
    output_dir="$WORK/$name" overwrite_output_dir=true ${KEYS:-} 2>&1 | tee "$WORK/$name.log"
}
for size in $SIZES; do
  run_dpo "dpo-$size" "$size" "${LAUNCH[@]}"
  KEYS=logits_chunk_size=null run_dpo "dpo-$size-wholehead" "$size" "${LAUNCH[@]}"
done
if [ "$REHEARSE" = 0 ] && "$PY" -c "import deepspeed" 2>/dev/null; then
  run_dpo zero3-0.5b 0.5b --num_processes "$NGPU" --config_file configs/accelerate/zero3.yaml
else
  echo "== ZeRO-3 skipped: deepspeed is not installed (or a rehearsal)"
fi
if [ "$REHEARSE" = 0 ] && "$PY" -c "import bitsandbytes" 2>/dev/null; then
  echo "== QLoRA DPO, 4-bit nf4, 1 GPU"
  rm -rf "$WORK/qlora"
  "$PY" -m personalign train model="$WORK/model-0.5b" data="$WORK/alignx.jsonl" view.view=ica max_length=1024 \
    load_in_4bit=true use_peft=true lora_r=8 bf16=true max_steps=2 per_device_train_batch_size=2 \
    report_to=none output_dir="$WORK/qlora" overwrite_output_dir=true
else
  echo "== QLoRA skipped: bitsandbytes is not installed (or a rehearsal)"
fi

first=${SIZES%% *}
echo "== scoring bench"
"$PY" bench/scoring.py --n "$SCORE_N" --max-length "$SCORE_LEN" --max-tokens-per-batch $((SCORE_LEN * 4)) --device "$DEVICE" \
  --dtype "$DTYPE" --model "$WORK/model-$first" | tee "$WORK/scoring.txt"
echo "== training bench"
"$PY" bench/train_dpo.py --steps 2 --batch "$BATCH" --max-length "$MAXLEN" --contenders ours,trl-pre \
  --device "$DEVICE" --model "$WORK/model-$first" | tee "$WORK/train_dpo.txt"

"$PY" - "$WORK" "$started" "$DEVICE" <<'EOF'
import json
import re
import sys
import time
from pathlib import Path

import torch

out, started, device = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
params = json.loads((out / "parameters.json").read_text())
name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (rehearsal)"
peak_tflops = 989.0 if "H100" in name or "H200" in name else 312.0 if "A100" in name else None  # dense bf16
gpus = torch.cuda.device_count() if device == "cuda" else 1
summary = {"device": name, "gpus": gpus, "parameters": params, "runs": {}}
reference = re.compile(r"reference log-probs of .*?: (computed by the sharded model|computed|cache)"
                       r"(?: in ([\d.]+) s)?(?:, peak ([\d.]+) GiB)?")
for run in sorted(p.name for p in out.iterdir() if (p / "metrics.jsonl").is_file()):
    rows = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines() if "train/loss" in line]
    last, size = rows[-1], next((part for part in run.split("-") if part in params), None)
    tps = last.get("train/tokens_per_second")
    n = params.get(size)
    mfu = None if tps is None or peak_tflops is None or n is None else 6 * n * tps / (peak_tflops * 1e12 * gpus)
    log = out / f"{run}.log"
    found = reference.search(" ".join(log.read_text(errors="replace").split())) if log.is_file() else None
    summary["runs"][run] = {"loss": last["train/loss"], "tokens_per_second": tps,
                            "peak_memory_gib": last.get("train/peak_memory_gib"), "mfu": mfu,
                            "reference": None if found is None else {
                                "how": found[1], "seconds": found[2] and float(found[2]),
                                "peak_memory_gib": found[3] and float(found[3])}}
for bench in ("scoring", "train_dpo"):
    lines = (out / f"{bench}.txt").read_text().splitlines()
    summary[bench] = lines[-1] if lines else None
summary["seconds"] = time.time() - started
(out / "gpu_smoke.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
EOF
if [ "$RESULTS" != "$WORK" ]; then
  mkdir -p "$RESULTS"
  cp "$WORK/gpu_smoke.json" "$WORK/scoring.txt" "$WORK/train_dpo.txt" "$RESULTS/"
  for run in "$WORK"/*/metrics.jsonl; do cp "$run" "$RESULTS/$(basename "$(dirname "$run")")-metrics.jsonl"; done
  cp "$WORK"/*.log "$RESULTS/" 2>/dev/null || true
fi
