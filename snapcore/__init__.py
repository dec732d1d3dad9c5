"""snapcore."""
