"""A Slack emulator for the sandbox: the Web API methods modoru calls, the
messages per channel, and a page whose buttons send signed interactivity
requests to the app's gateway, as Slack does."""

from .emulator import SlackEmulator, slack_signature
from .workspace import Workspace

__all__ = ["SlackEmulator", "Workspace", "slack_signature"]
