"""The one way requests leave: client, worker pool, retries, pacing, cache, costs."""
