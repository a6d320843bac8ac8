"""The attention engine: SelfExtend plugged into transformers' registries, and transformers' own RoPE scalings.

rope.py re-rotates queries and keys; blocks.py computes exact attention blocks merged by log-sum-exp (CPU);
flex.py does the same with FlexAttention (CUDA); selfextend.py registers the attention and switches models to it;
scaling.py switches a model to transformers' YaRN or dynamic NTK RoPE scaling for comparison. Everything here
imports torch.
"""
