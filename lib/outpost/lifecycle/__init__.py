"""The use cases (start, stop, poll, abandon, background work, the timer), in plain arguments and return values."""
