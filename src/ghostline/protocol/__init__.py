"""The protocol, pure: formats, frames, handshakes, rules. No asyncio, SQLite, mmap,
files or clocks here (a test keeps it so)."""
