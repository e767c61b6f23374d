"""Triton kernels, each beside the pure-PyTorch reference that defines it (conventions: ``kernels/README.md``)."""
