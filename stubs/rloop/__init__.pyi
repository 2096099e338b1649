# The part of rloop (an asyncio event loop in Rust) the benchmark calls.
import asyncio

def new_event_loop() -> asyncio.AbstractEventLoop: ...
