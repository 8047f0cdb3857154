"""The member side of the network: one relay connection at a time, reconnecting,
resending the outbox, following presence (asyncio adapters around the pure protocol)."""
