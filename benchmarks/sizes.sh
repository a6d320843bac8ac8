#!/usr/bin/env bash
# The series behind the README's "which model on which machine" table (issue 14), resumable: rerunning it skips
# the cases already in benchmarks/results/sizes.jsonl. On this project's 2-core CPU, one core:
#   OMP_NUM_THREADS=1 bash benchmarks/sizes.sh       (hours; float32, as --dtype auto picks without native bf16)
set -euo pipefail
DTYPE=${DTYPE:-float32}
sizes() { python benchmarks/sizes.py --dtype "$DTYPE" "$@"; }
sizes --model qwen2.5-3b --length 8192 --layers 4 --one-forward
sizes --model llama-3.1-8b --length 8192 --layers 2 --one-forward
sizes --model llama-3.2-1b --length 8192 --one-forward
sizes --model llama-3.2-1b --length 32768 --selfextend-only  # the peak-RSS target at 32k
sizes --model llama-3.2-1b --length 16384
sizes --model qwen2.5-3b --length 16384 --layers 4
sizes --model llama-3.1-8b --length 16384 --layers 2
