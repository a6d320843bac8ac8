#!/usr/bin/env bash
# Which method beyond L by default (issue 33, "the default method, by evidence"): SelfExtend as planned,
# SelfExtend 512x8 and DCA at 16k on niah_single_2 and niah_multikey_1 (RULER), and the fact task (an invented
# fact about a pie in Paul Graham's essays, five depths) at 14k, up to 20 samples a cell. Every stage resumes
# from its results file, so rerunning this script after an interruption (or in a later session) only runs the
# missing cases; the stages go in rounds of samples so that a stopped run leaves every cell of a comparison comparable.
#   OMP_NUM_THREADS=1 bash benchmarks/method_choice.sh   (one core: 2-7 min a 16k case)
# STAGES=ruler or STAGES=fact runs only those stages: the two write different files, so two processes (one core
# each) can run them side by side.
# Report: python benchmarks/method_choice.py
set -euo pipefail
STAGES=${STAGES:-ruler,fact}
RULER=${RULER:-benchmarks/results/ruler-smollm2.jsonl}  # the grid's file: its 16k cases count
FACT=${FACT:-benchmarks/results/fact-essays.jsonl}
export LONGLM_CACHE_DIR=${LONGLM_CACHE_DIR:-/tmp/longlm-eval-cache}
# The 16-bit weights computed in float32, with a float32 KV cache: the grid's earlier 16k cases ran so, and
# every machine kind runs it alike.
PINNED=(--dtype float32 --kv-dtype float32 --quantize none)
HAYSTACK=${HAYSTACK:-/tmp/longlm-essays.txt}
python - "$HAYSTACK" <<'EOF'
import json, os, sys
import long_context_eval
path = os.path.join(os.path.dirname(long_context_eval.__file__), "data/synthetic/json/PaulGrahamEssays.json")
with open(path, encoding="utf-8") as f, open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write(json.load(f)["text"])
EOF
ruler() {
  [[ ,$STAGES, == *,ruler,* ]] || return 0
  longlm eval "${PINNED[@]}" --results "$RULER" --lengths 16k --tasks niah_multikey_1,niah_single_2 "$@"
}
# 32 new tokens: the model often restates the question ("the secret ingredient of the baker's family pie is ...")
# before the answer, which passkey's default of 10 cuts off.
fact() {
  [[ ,$STAGES, == *,fact,* ]] || return 0
  longlm passkey "${PINNED[@]}" --task fact --haystack "$HAYSTACK" --lengths 14k --depths 0.1,0.3,0.5,0.7,0.9 \
    --max-new-tokens 32 --results "$FACT" "$@" > /dev/null
}
# DCA against planned SelfExtend first (the decision), then the 512x8 setting.
for round in 1 2; do
  ruler --methods selfextend,dca --samples "$((round * 10))"
  fact --method selfextend,dca --trials "$((round * 2))"
done
for round in 1 2; do
  ruler --methods selfextend:512x8 --samples "$((round * 10))"
  fact --method selfextend -w 512 -g 8 --trials "$((round * 2))"
done
