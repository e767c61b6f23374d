"""Conversions between zoo models and other libraries' (``minimax``: Hugging Face ``transformers``)."""
