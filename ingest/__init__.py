"""Keep folders of documents in sync with OpenAI vector stores."""

__version__ = "0.1.0"
