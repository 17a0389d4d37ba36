from __future__ import annotations

from config.common import CommonSettings
from config.loader import Url


class ConsumerSettings(CommonSettings, frozen=True, kw_only=True):
    """Durable consumers (`coderunner consume NAME`)"""

    redis_url: Url
    mongodb_uri: Url
