"""Interactive segmentation (issue 22): a session that encodes a volume once and answers each
click or box with the prompt encoder and mask decoder alone."""

from .session import Change, Session, SliceState

__all__ = ["Change", "Session", "SliceState"]
