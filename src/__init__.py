"""PPT-DeiT for MindSpore: DeiT with token Pruning & Pooling (Wu et al., arXiv 2310.01812)."""
