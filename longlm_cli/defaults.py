"""Named defaults shared by function signatures and Click options. Importing this module is free (no torch)."""

# SelfExtend planning
DEFAULT_WINDOW_FRACTION = 8  # W = L // 8 unless the user chooses (1024 for an 8k model)
MIN_WINDOW = 16  # below this the neighbour band is too thin to be useful
MAX_GROUP_SIZE = 64  # the largest group size we consider sensible
TARGET_FRACTION = 7 / 12  # aim the farthest grouped position at the middle of (1/2 .. 2/3) * L
LOW_FRACTION = 1 / 2
HIGH_FRACTION = 2 / 3

# SelfExtend query log-scaling (off unless asked for: --log-scale BASE, or a `selfextend...+log` eval method)
# `+log` methods use base = this many pretraining windows L: the reference code (datamllab/LongLM) documents its
# scale_base as "equal to pretraining length, e.g. 4096 for Llama", so queries inside L are never scaled.
LOG_SCALE_BASE_WINDOWS = 1
DEFAULT_EXTEND_FROM = 1.0  # SelfExtend switches on once prompt + answer exceed this fraction of L (--extend-from)

# Engine
DEFAULT_QUERY_CHUNK = 4096  # queries per attention block (bounds temporaries; the band uses min(this, W - 1))
EXTENSION_METHODS = ("selfextend", "dca")  # what runs beyond L: SelfExtend, or Dual Chunk Attention (ChunkLlama)
DEFAULT_EXTENSION = "selfextend"
DEFAULT_EVIDENCE_PASSAGES = 0  # ask --evidence N: answer from the N most attended passages (0: the whole document)
# --evidence auto (ask's and chat's default): beyond L, the passages of each unit that answered best at 16k
# (docs/evidence.md), when the model's retrieval heads are known; else the whole document
AUTO_EVIDENCE_PASSAGES = {"sentence": 5, "paragraph": 3}
DEFAULT_EVIDENCE_UNIT = "sentence"  # passages for --evidence: "sentence" or "paragraph"
DEFAULT_EVIDENCE_HEADS = 8  # the measured retrieval heads whose attention ranks the passages
DEFAULT_PREFILL_CHUNK = 2048  # tokens per forward pass during prefill (bounds activation memory)

# Generation
DEFAULT_MAX_NEW_TOKENS = 512
MAX_NEW_TOKENS_LIMIT = 1 << 20  # --max-new-tokens at most: more than any model's window (1M tokens)
DEFAULT_TEMPERATURE = 0.0
DEFAULT_TOP_K = 0  # off
DEFAULT_TOP_P = 1.0  # off
DEFAULT_REPETITION_PENALTY = 1.0  # off
DEFAULT_NO_REPEAT_NGRAM = 0  # off: ask, chat, and eval (RULER's greedy decoding)
# summarize's own defaults, chosen by `longlm eval --tasks summary` (README, "Summaries"): at 4k tokens greedy
# summaries of the embedded model repeat 15.5 % of their word 4-grams; no repeated 4-gram of tokens brings that
# to 0 and keeps the greedy text up to where it would loop (as summarisation models such as BART ship with).
TASK_SAMPLING_DEFAULTS = {"summarize": {"no_repeat_ngram_size": 4}}
DEFAULT_DEVICE = "auto"
DEFAULT_DTYPE = "auto"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# The linear layers' weights (runtime/quantize.py): auto keeps a GGUF file near its own bits, any other model as is
QUANTIZE_CHOICES = ("auto", "none", "int8", "int4")
DEFAULT_QUANTIZE = "auto"
# What the KV cache keeps keys and values in (runtime/kvcache.py): auto is bfloat16 on the CPU, the model's type on CUDA
KV_DTYPES = ("auto", "bfloat16", "float32")
DEFAULT_KV_DTYPE = "auto"
DEFAULT_MODEL = "smollm2"  # the embedded SmolLM2-135M-Instruct

# Document KV cache
DEFAULT_DOC_CACHE_MAX_BYTES = 4 * 1024**3  # least-recently-used entries are evicted above this (LONGLM_CACHE_MAX_BYTES)
DOC_CACHE_MAX_BYTES_ENV = "LONGLM_CACHE_MAX_BYTES"
# Documents shorter than this are prefilled, never cached (LONGLM_CACHE_MIN_TOKENS overrides it). Measured with
# `python benchmarks/doccache.py --small` (README): a hit beat a prefill even at 41 tokens, so the bound only
# keeps the saving worth an entry on disk (a hit then saves about half its prefill time or more).
DEFAULT_DOC_CACHE_MIN_TOKENS = 64
DOC_CACHE_MIN_TOKENS_ENV = "LONGLM_CACHE_MIN_TOKENS"
DEFAULT_CHAT_BUDGET_FACTOR = 4  # chat plans for the document plus this many times --max-new-tokens

# Evaluation (`longlm passkey`)
EVAL_TASKS = ("passkey", "fact")
DEFAULT_EVAL_TASK = "passkey"
DEFAULT_EVAL_LENGTHS = "4k,8k,16k"
DEFAULT_EVAL_DEPTHS = "0,0.25,0.5,0.75,1"
DEFAULT_EVAL_TRIALS = 1
DEFAULT_EVAL_SEED = 0
DEFAULT_EVAL_METHODS = "all"
DEFAULT_EVAL_NEW_TOKENS = 10
DEFAULT_EVAL_RESULTS = "longlm-passkey-results.jsonl"

# Evaluation (`longlm eval`: RULER)
DEFAULT_GRID_TASKS = "niah_single_2,niah_multikey_1,vt,qa_1,qa_2"
DEFAULT_GRID_LENGTHS = "4k,8k,16k"
DEFAULT_GRID_METHODS = "none,selfextend,dynamic,yarn,truncate"
DEFAULT_GRID_SAMPLES = 10
PROMPT_STYLES = ("chat", "plain", "ask", "ask-direct")  # `longlm eval --prompt` (evaluation/grid_prompts.py)
DEFAULT_PROMPT_STYLE = "chat"
DEFAULT_GRID_RESULTS = "longlm-eval-results.jsonl"

# Reading inputs
DEFAULT_MAX_INPUT_BYTES = 256 * 1024**2  # the most read from one document or prompt file (LONGLM_MAX_INPUT_BYTES)
MAX_INPUT_BYTES_ENV = "LONGLM_MAX_INPUT_BYTES"

# Output
JSON_VERSION = 1  # of every --json object (contract.py); renaming or removing a key raises it
