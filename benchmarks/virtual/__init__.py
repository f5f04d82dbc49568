"""Searches replayed in virtual time against learning-curve surrogates (section `search`)."""
