"""Store adapters: one small interface (locate, erase, verify) per store."""
