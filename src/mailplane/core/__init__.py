"""The thin shared domain core: encryption at rest, domain errors, model fields."""
