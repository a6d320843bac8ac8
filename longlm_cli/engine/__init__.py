"""The attention engine: SelfExtend and Dual Chunk Attention plugged into transformers' registries, and
transformers' own RoPE scalings.

rope.py re-rotates queries and keys; blocks.py computes exact attention blocks merged by log-sum-exp (CPU);
flex.py does the same with FlexAttention (CUDA); switch.py holds what both methods share with the model (support
check, registration, per-layer settings, the cache of re-rotated keys, switching on and off); selfextend.py is
SelfExtend on those; dca.py is Dual Chunk Attention (ChunkLlama) on the same; scaling.py switches a model
to transformers' YaRN or dynamic NTK RoPE scaling for comparison. Everything here imports torch.
"""
