"""The LLM client: prices, the prompt, the answers, request bodies, live and Batch API classifiers, concurrency, and
what was learned about a server."""
