"""The Textual chat app (`ghostline chat`)."""
