#!/usr/bin/env bash
# The one prepared GPU check: run it first on a machine with one CUDA GPU (at most ~16 minutes in all;
# under a 10-minute limit per call run it in two: --only env,gpu-tests,brave then --only vivit,encoder,data).
#
#   bash tools/gpu_check.sh [--out DIR] [--only STEP,STEP] [--dry-run]
#
# Steps (each with its own time limit; a failing step is recorded and the next one runs):
#   env       nvidia-smi and torch's view of the device
#   gpu-tests pytest -m gpu (the CUDA branches, speed switches, SyncBN / NCCL DDP / FSDP on one GPU; they skip without CUDA)
#   brave     videossl bench train, recipes/brave/kinetics400.yaml (TSM-50 pair) vs its plain-torch step, and each
#             speed switch (bf16, TF32, channels-last, compile, all) vs the plain fp32 step of the same run
#   vivit     the same for recipes/long_video/stage1_kinetics.yaml (ViViT; AdamW: fused AdamW too; no channels-last: a no-op)
#   encoder   videossl bench encoder --model vivit-b --frames 16,32,64,128,256 --mask 0,0.5,0.75
#   data      videossl bench data on a small synthetic set, CPU and device (gpu-split) augmentation
# Writes DIR/gpu_check.json (one record per step: command, seconds, exit code, output tail) and
# DIR/gpu_check.md (a table for BENCHMARKS.md); each bench also leaves its own files in DIR.
# --dry-run prints the plan and records every CUDA step as skipped (CI runs it: the script stays runnable).
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-gpu-check}"
dry=0
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --only) only=",$2,"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
py="${PYTHON:-python}"
records="$out/.records.jsonl"
: > "$records"

step() {  # step NAME SECONDS COMMAND...
  local name="$1" limit="$2"; shift 2
  local cmd="$*" start rc tail
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then return 0; fi
  echo "== $name (limit ${limit}s): $cmd"
  if [ "$dry" = 1 ]; then
    "$py" - "$name" "$cmd" "$limit" >> "$records" <<'PY'
import json, sys
print(json.dumps({"step": sys.argv[1], "command": sys.argv[2], "limit_s": int(sys.argv[3]), "status": "skipped (dry run)"}))
PY
    return 0
  fi
  start=$(date +%s)
  timeout "$limit" bash -c "$cmd" > "$out/$name.log" 2>&1
  rc=$?
  tail=$(tail -c 3000 "$out/$name.log")
  "$py" - "$name" "$cmd" "$limit" "$rc" "$(( $(date +%s) - start ))" "$tail" >> "$records" <<'PY'
import json, sys
name, cmd, limit, rc, secs, tail = sys.argv[1:7]
status = "ok" if rc == "0" else ("timed out" if rc in ("124", "137") else f"failed (exit {rc})")
if name == "gpu-tests" and rc == "5":
    status = "ok (no gpu-marked test collected)"
print(json.dumps({"step": name, "command": cmd, "limit_s": int(limit), "exit_code": int(rc), "seconds": int(secs),
                  "status": status, "output_tail": tail}))
PY
  echo "   -> exit $rc in $(( $(date +%s) - start )) s"
}

step env 30 "nvidia-smi; $py -c 'import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'"
step gpu-tests 200 "$py -m pytest -q -m gpu -p no:cacheprovider"
step brave 300 "$py -m videossl.cli bench train --config recipes/brave/kinetics400.yaml --device cuda --steps 5 --warmup 3 --rounds 2 --switches plain,bf16,tf32,channels_last,compile,all --json $out/bench_train_brave.json"
step vivit 150 "$py -m videossl.cli bench train --config recipes/long_video/stage1_kinetics.yaml --device cuda --steps 5 --warmup 3 --rounds 2 --switches plain,bf16,tf32,fused_adamw,compile --json $out/bench_train_vivit.json"
step encoder 180 "$py -m videossl.cli bench encoder --model vivit-b --frames 16,32,64,128,256 --mask 0,0.5,0.75 --device cuda --dtype bf16 --steps 5 --warmup 2 --out $out/encoder"
step data 90 "$py -m videossl.cli data synth --out $out/synth --num-videos 64 --no-progress && $py -m videossl.cli bench data --config recipes/brave/synthetic.yaml --data-dir $out/synth --augment cpu gpu-split --workers 4 --clips 64"

"$py" - "$records" "$out" "$dry" <<'PY'
import json, sys
from pathlib import Path
records, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
rows = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
(out / "gpu_check.json").write_text(json.dumps({"dry_run": dry, "steps": rows}, indent=2) + "\n")
lines = ["| step | status | seconds | command |", "|---|---|---|---|"]
lines += [f"| {r['step']} | {r['status']} | {r.get('seconds', '-')} | `{r['command']}` |" for r in rows]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
records.unlink()
print("\n".join(lines))
print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
PY
