"""An emulator of OpenAI's Files + Vector Stores API (a real HTTP server on 127.0.0.1) for testing `ingest`.

    with Emulator(index_delay=0.1, upload_rps=50, seed=1) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="test")
        ...
        emu.inject("503", endpoint="POST /files"); emu.lose_next_replies(1); emu.expire_store(store_id)
        emu.counters()["uploads"]

Options: faults.Options (also CLI flags of `python -m tests.emulator`). Endpoint names: ENDPOINTS.
"""

from .emulator import Emulator
from .faults import FAULT_KINDS, Options
from .routes import ENDPOINTS

__all__ = ["ENDPOINTS", "FAULT_KINDS", "Emulator", "Options"]
