"""Data the embedded model needs that its package does not ship: the tokenizer (see NOTICE)."""
