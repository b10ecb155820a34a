"""Federation: nodes that register each other and pull each other's events.

``tokens`` are this node's tokens that peers present; ``registry`` holds the peers this node
pulls from (with their tokens); ``sync`` pulls, with a cursor per peer.
"""

from __future__ import annotations
