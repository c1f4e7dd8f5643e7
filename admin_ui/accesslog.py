"""What the admin UI writes about a request's path: never an emailed link's token.

The path is rebuilt from the route it matched: a path parameter is written as it came only
when `PUBLIC_PARAMS` names it (a key id, a static file); any other one (a link's token, or
whatever a future route adds) is `<redacted>`, so a new link route is safe without a change
here. A path no route matched keeps only the words routes are made of. Query strings (a
`next` may hold a link) are never written. `RedactingAccessLogger` logs in this form, and
the app makes it its own access logger whichever runner serves it.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiohttp.web_urldispatcher import DynamicResource, UrlMappingMatchInfo

__all__ = ["PUBLIC_PARAMS", "REDACTED", "RedactingAccessLogger", "loggable_path"]

PUBLIC_PARAMS = frozenset({"key_id", "filename"})
REDACTED = "<redacted>"


def _route_words(router: web.UrlDispatcher) -> set[str]:
    words = set()
    for resource in router.resources():
        for part in resource.canonical.split("/"):
            if part and "{" not in part:
                words.add(part)
    return words


def _by_words(path: str, router: web.UrlDispatcher) -> str:
    words = _route_words(router)
    return "/".join(part if not part or part in words else REDACTED
                    for part in path.split("/"))


def loggable_path(request: BaseRequest) -> str:
    """The request's path with every part that may be a secret replaced by `<redacted>`."""
    # SECURITY: tokens in link paths never reach a log line.
    # A request the HTTP parser refused is never routed: its match info stays None, and the
    # public `match_info` asserts that it is not (the one private read in this module,
    # pinned by its unit test).
    match_info: UrlMappingMatchInfo | None = getattr(request, "_match_info", None)
    if match_info is None:
        return REDACTED
    resource = match_info.route.resource
    if isinstance(resource, DynamicResource):
        values = {name: value if name in PUBLIC_PARAMS else REDACTED
                  for name, value in match_info.items()}
        return resource.canonical.format_map(values)
    if resource is not None:
        return request.path
    # No route matched (404, 405): only the words of routes are kept.
    apps = match_info.apps
    return _by_words(request.path, apps[0].router) if apps else REDACTED


class RedactingAccessLogger(AbstractAccessLogger):
    """`<ip> "<method> <path>" <status> <bytes> <seconds>s`, the path as `loggable_path`."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.3fs', request.remote, request.method,
                         loggable_path(request), response.status, response.body_length,
                         time)
