#!/usr/bin/env bash
# The RULER grid behind the README's tables (issue 15), on the embedded model, in stages ordered by what the
# targets need first: every stage resumes from the same results file, so rerunning this script after an
# interruption (or in a later session) only runs the missing cases.
#   OMP_NUM_THREADS=1 bash benchmarks/ruler_grid.sh   (one core: about 30-40 s a 4k case, 4-9 min a 16k case)
set -euo pipefail
RESULTS=${RESULTS:-benchmarks/results/ruler-smollm2.jsonl}
SAMPLES=${SAMPLES:-5}
export LONGLM_CACHE_DIR=${LONGLM_CACHE_DIR:-/tmp/longlm-eval-cache}
# float32 pinned: the README's tables are float32, and `--dtype auto` is bfloat16 on a CPU where bf16 measures
# faster (AMX). Cases are keyed by dtype, so DTYPE=bfloat16 adds its own cases beside them (ruler_tables --dtype).
DTYPE=${DTYPE:-float32}
grid() { longlm eval --samples "$SAMPLES" --results "$RESULTS" --dtype "$DTYPE" "$@"; }
TARGETS=qa_1,qa_2,niah_multikey_1  # the tasks of the targets at 2x L
BASE=none,selfextend,dynamic,yarn,truncate
# 1. L/2 (inside L: every method is the plain model) for the target tasks and two more.
grid --tasks niah_single_2,niah_multikey_1,vt,qa_1,qa_2 --lengths 4k --methods "$BASE"
# 2. 2x L: the planned default and the truncation baseline first, then the levers, then the other baselines.
grid --tasks $TARGETS --lengths 16k --methods selfextend,truncate
grid --tasks $TARGETS --lengths 16k --methods dca,selfextend+log
# Prompts (issue 15): the qa tasks inside L in RULER's prompt with and without the chat template, and as
# `longlm ask` sends them with and without its "say so" clause; 10 samples each.
for style in chat plain ask ask-direct; do
  grid --tasks qa_1,qa_2 --lengths 4k --methods none --prompt "$style" --samples 10
done
# Summaries inside L first (cheap): greedy against the two repetition settings.
grid --tasks summary --lengths 4k --methods selfextend
grid --tasks summary --lengths 4k --methods selfextend --repetition-penalty 1.2
grid --tasks summary --lengths 4k --methods selfextend --no-repeat-ngram 4
# Extension before L (--extend-from): at 7k (0.875 L), the plain model against SelfExtend switched on early.
grid --tasks $TARGETS --lengths 7168 --methods none,selfextend --extend-from 0.5 --samples 10
# The baselines of the 2x L target, then summaries beyond L (where greedy ones loop), then a W x G grid.
grid --tasks $TARGETS --lengths 16k --methods yarn,dynamic
for decoding in "--no-repeat-ngram 4" "" "--repetition-penalty 1.2"; do  # summarize's default first
  # shellcheck disable=SC2086  # an empty setting is greedy
  grid --tasks summary --lengths 16k --methods selfextend $decoding
done
grid --tasks $TARGETS --lengths 16k --methods none,selfextend:2048x3,selfextend:512x8
# 3. Ten samples a cell for the targets: L/2, then 2x L (the planned default, truncation, then the baselines),
# the needle in essays at 2x L, and the prompts beyond L; then summaries for the other methods.
grid --tasks $TARGETS --lengths 4k --methods "$BASE" --samples 10
grid --tasks $TARGETS --lengths 16k --methods selfextend,truncate --samples 10
grid --tasks niah_single_2 --lengths 16k --methods selfextend,truncate
grid --tasks niah_multikey_1,qa_2,qa_1 --lengths 16k --methods selfextend:512x8 --samples 10  # the W x G lead, checked
grid --tasks $TARGETS --lengths 16k --methods yarn,dynamic,none --samples 10
for style in ask-direct plain; do
  grid --tasks qa_1,qa_2 --lengths 16k --methods selfextend --prompt "$style" --samples 10
done
grid --tasks summary --lengths 4k,16k --methods selfextend,truncate,dca
grid --tasks summary --lengths 4k,16k --methods selfextend,truncate,dca --repetition-penalty 1.2
grid --tasks summary --lengths 4k,16k --methods selfextend,truncate,dca --no-repeat-ngram 4
# 4. At L, and the remaining tasks.
grid --tasks niah_single_2,niah_multikey_1,vt,qa_1,qa_2 --lengths 8k --methods "$BASE"
grid --tasks niah_single_2,vt --lengths 16k --methods "$BASE,dca,selfextend+log"
grid --tasks $TARGETS --lengths 16k --methods dca,selfextend+log --samples 10
