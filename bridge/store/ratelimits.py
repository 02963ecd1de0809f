"""Fixed-window rate limits shared by every worker."""

from __future__ import annotations

import time


class RateLimitsMixin:
    """Rate-limit buckets (mixed into Store)."""

    def hit_rate_limit(self, bucket: str, *, limit: int, window: float) -> bool:
        """Count one hit in a fixed window; True when the bucket is over its limit."""
        now = time.time()
        with self.immediate():
            row = self._one("SELECT * FROM rate_limits WHERE bucket = ?", [bucket])
            if row is None or row["window_start"] <= now - window:
                self.db.execute(
                    "INSERT INTO rate_limits (bucket, window_start, hits) VALUES (?, ?, 1)"
                    " ON CONFLICT(bucket) DO UPDATE SET window_start = ?, hits = 1",
                    [bucket, now, now],
                )
                return False
            self.db.execute("UPDATE rate_limits SET hits = hits + 1 WHERE bucket = ?", [bucket])
            return row["hits"] + 1 > limit

    def rate_limit_wait(self, bucket: str, *, window: float) -> float:
        """Seconds until the bucket's current window ends (0 when none is open)."""
        row = self._one("SELECT window_start FROM rate_limits WHERE bucket = ?", [bucket])
        return max(0.0, row["window_start"] + window - time.time()) if row else 0.0

    def forget_rate_limit_hit(self, bucket: str) -> None:
        """Take one hit back (it turned out not to count, e.g. a correct password)."""
        self.db.execute("UPDATE rate_limits SET hits = MAX(hits - 1, 0) WHERE bucket = ?", [bucket])
