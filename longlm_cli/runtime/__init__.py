"""Running a model: loading it (and converting GGUF files once), chunked prefill and token-by-token decoding."""
