"""The floor of the house: the key format, the scopes and the error base.

Everything above imports from here; nothing here imports from the rest of ``app``, so the
primitives can be read, tested and reused (by a secret scanner, say) on their own.
"""
