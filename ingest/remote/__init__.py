"""Remote vector-store backends: OpenAI and the embedded local store."""
