"""Federation: nodes that register each other and pull each other's events.

``tokens`` are this node's tokens that peers present; ``registry`` holds the peers this node
pulls from (with their tokens); ``sync`` pulls, with a cursor per peer; ``fetch`` fetches one page
of a peer's events within a deadline and byte, count and size caps.
"""

from __future__ import annotations
