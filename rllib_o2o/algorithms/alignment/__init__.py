"""Stage 2's trainer: Z fitted to the offline actor (or distilled from its critic), then the critic surgery."""
