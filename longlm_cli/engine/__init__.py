"""The attention engine: SelfExtend and Dual Chunk Attention plugged into transformers' registries, and
transformers' own RoPE scalings.

rope.py re-rotates queries and keys; blocks.py computes exact attention blocks merged by log-sum-exp (CPU);
flex.py does the same with FlexAttention (CUDA); selfextend.py registers the attention and switches models to it;
dca.py does the same for Dual Chunk Attention (ChunkLlama) on the blocks.py kernels; scaling.py switches a model
to transformers' YaRN or dynamic NTK RoPE scaling for comparison. Everything here imports torch.
"""
