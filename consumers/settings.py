from __future__ import annotations

from deploy.config import Url
from deploy.settings import CommonSettings


class ConsumerSettings(CommonSettings, frozen=True, kw_only=True):
    """Durable consumers (caching, progress, grading)"""

    redis_url: Url
    mongodb_uri: Url
