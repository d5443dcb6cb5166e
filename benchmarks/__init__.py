"""The side-by-side benchmark (`make bench`): ceiling, replay and live worker on one broker."""
