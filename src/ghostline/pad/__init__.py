"""Pad code: kit files (mapped), the kit-set writer, sealing and opening, entropy."""
