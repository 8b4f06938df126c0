"""The three stages of offline-to-online training, each runnable on its own."""
