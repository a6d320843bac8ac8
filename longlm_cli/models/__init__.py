"""What a model is, read from its files without torch: the catalogue of families and model references, the GGUF
header, token counting, and the memory its weights and KV cache take (footprint)."""
