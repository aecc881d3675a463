"""The front fetches the media a request names by URL, so that the engine never fetches anything.

vLLM fetches an http(s) image URL from inside the server's network: a client could make it read
``http://127.0.0.1:PORT/...`` (the front's own routes), a private address or a cloud metadata
service. The front sees every request, so it fetches each remote media URL itself, under one
policy, and relays the request with the media inline as a ``data:`` URL:

- http(s) only; ``file://`` only inside ``NIMCTL_MEDIA_LOCAL_DIR``, read by the front too;
- the host name is resolved once, every address it resolves to is checked (no loopback, private,
  link-local, multicast, reserved or metadata address), and the connection goes to the checked
  addresses alone (:class:`PinnedResolver`): a name cannot resolve to one address for the check
  and another for the connection;
- no redirects, one attempt, one deadline for resolving, connecting and reading, a byte cap
  enforced while reading, and the pixel cap on the image's header;
- ``NIMCTL_ALLOWED_MEDIA_DOMAINS`` limits the hosts; ``NIMCTL_MEDIA_URLS=none`` refuses them all.

Every refusal or failure is a :class:`BadRequestError` (a 400 saying why). The engine is started
with ``--allowed-media-domains`` naming a domain that cannot exist (``plan.ENGINE_MEDIA_DOMAIN``),
so a remote URL that reached it some other way would be refused there, not fetched.

Requests whose bytes hold no ``:/`` (``data:`` URLs have none), spelt plainly or JSON-escaped,
are relayed as they came, unparsed here (:func:`_may_name_a_url`).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import mimetypes
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from nimctl.media import SUPPORTED_TYPES, image_size, sniff_media_type
from nimctl.server.config import ServerConfig
from nimctl.server.request_checks import BadRequestError, parse_object

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# More remote media than any model takes in one prompt; each is one connection from the front.
MAX_REMOTE_MEDIA = 16
# Cloud metadata services: refused even inside NIMCTL_MEDIA_ALLOWED_NETWORKS.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Content parts whose URL the engine would load, and the key holding it ({"url": ...} or a string).
_URL_PARTS = {
    "image_url": "image_url",
    "video_url": "video_url",
    "audio_url": "audio_url",
    "input_image": "image_url",
}
_KIND = {"image_url": "image", "input_image": "image", "video_url": "video", "audio_url": "audio"}
_SHOWN_URL = 120  # characters of a URL quoted in an error


@dataclass(frozen=True)
class MediaPolicy:
    """What the front may fetch; built from :class:`ServerConfig` by :func:`policy_from_config`."""

    remote: bool = True  # NIMCTL_MEDIA_URLS=fetch
    allowed_domains: frozenset[str] = frozenset()  # empty: any public host
    allowed_networks: tuple[IPNetwork, ...] = ()  # the test-only escape
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # names resolved without DNS
    timeout: float = 5.0
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 8192 * 8192
    local_dir: Path | None = None


_log = logging.getLogger(__name__)
_warned: set[tuple[str, ...]] = set()


def policy_from_config(config: ServerConfig) -> MediaPolicy:
    escape = tuple(config.media_allowed_networks)
    if escape and escape not in _warned:  # once: the escape is for tests, and a server log should say so
        _warned.add(escape)
        _log.warning(
            "NIMCTL_MEDIA_ALLOWED_NETWORKS=%s: media may be fetched from these networks", ",".join(escape)
        )
    return MediaPolicy(
        remote=config.media_urls == "fetch",
        allowed_domains=frozenset(config.allowed_media_domains),
        allowed_networks=tuple(
            ipaddress.ip_network(net, strict=False) for net in config.media_allowed_networks
        ),
        hosts=read_hosts_file(config.media_hosts_file) if config.media_hosts_file else {},
        timeout=config.media_fetch_timeout,
        max_bytes=int(config.media_max_mb * 1024 * 1024),
        max_pixels=config.max_image_pixels,
        local_dir=config.media_local_dir.resolve() if config.media_local_dir else None,
    )


def read_hosts_file(path: Path) -> dict[str, tuple[str, ...]]:
    """Name -> addresses from an /etc/hosts-style file ("ADDRESS NAME [NAME...]", # comments)."""
    hosts: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2:
            for name in words[1:]:
                hosts.setdefault(name.lower().rstrip("."), []).append(words[0])
    return {name: tuple(addresses) for name, addresses in hosts.items()}


def address_refusal(address: IPAddress, policy: MediaPolicy) -> str | None:
    """Why the front may not connect to ``address``; None when it may."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if any(address in network for network in policy.allowed_networks):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:  # ::ffff:127.0.0.1 and friends reach the IPv4 address inside
        return address_refusal(embedded, policy)
    for attribute, why in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(address, attribute):
            return why
    return None if address.is_global else "not a public address"


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class PinnedResolver(AbstractResolver):
    """Answers with the addresses already checked, whatever DNS would say now. A session has one
    of these and fetches one URL, with no redirects: every name it is asked for is that URL's host."""

    def __init__(self, results: list[ResolveResult]) -> None:
        self._results = results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return list(self._results)

    async def close(self) -> None:
        pass


async def resolve_checked(host: str, port: int, policy: MediaPolicy) -> list[ResolveResult]:
    """Resolve ``host`` once and check every address; refused if any one is not allowed (a name
    that mixes public and private addresses is refused whole: no choosing which one is used)."""
    if host in policy.hosts:
        infos = [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in policy.hosts[host]]
    else:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise OSError(f"the name {host} does not resolve ({exc})") from None
        infos = [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in found]
    results: list[ResolveResult] = []
    for family, text in infos:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if why := address_refusal(address, policy):
            named = f"{host} is" if host == str(address) else f"{host} resolves to {address},"
            raise _RefusalError(f"{named} {why}")
        results.append(
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=family,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        )
    if not results:
        raise OSError(f"the name {host} resolves to no address")
    return results


class _RefusalError(Exception):
    """The policy refuses the URL (as opposed to a fetch that failed)."""


async def fetch_remote_media(body: bytes, config: ServerConfig) -> bytes:
    """``body`` with every remote or local media URL replaced by a ``data:`` URL of what it holds;
    ``body`` itself when it names none. Raises :class:`BadRequestError` saying why a URL failed."""
    if not _may_name_a_url(body):
        return body  # the fast path: no URL, nothing parsed twice
    try:
        payload = parse_object(body)
    except BadRequestError:
        return body  # the checks that follow say what is wrong with it
    targets = list(_url_targets(payload))
    if not targets:
        return body
    if len(targets) > MAX_REMOTE_MEDIA:
        raise BadRequestError(f"a request may name at most {MAX_REMOTE_MEDIA} media URLs, not {len(targets)}")
    policy = policy_from_config(config)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_inline(url, kind, param, policy)) for _, _, url, kind, param in targets
            ]
    except ExceptionGroup as failed:
        refusals = [exc for exc in failed.exceptions if isinstance(exc, BadRequestError)]
        if refusals:
            raise refusals[0] from None
        raise
    for (holder, key, _, _, _), task in zip(targets, tasks, strict=True):
        if isinstance(holder.get(key), dict):
            holder[key]["url"] = task.result()
        else:
            holder[key] = task.result()
    return _json_bytes(payload)


# A URL's ":/" as JSON may spell it: plainly, with "/" escaped, or with either as a \u escape.
_URL_HINTS = (b":/", b":\\/", b"\\u00")


def _may_name_a_url(body: bytes) -> bool:
    """Whether ``body`` may hold a URL with a scheme and a path; bytes.find is C, and no copy is made.
    A URL spelt with no slash at all (``http:host``) passes here and in the front's checks, and the
    engine refuses it (its --allowed-media-domains)."""
    return any(hint in body for hint in _URL_HINTS)


def _json_bytes(payload: dict[str, Any]) -> bytes:
    # ASCII escapes: a lone surrogate the client sent as \ud800 stays valid JSON, not an encode error.
    return json.dumps(payload, separators=(",", ":")).encode()


def _url_targets(payload: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, str, str, str]]:
    """(holder, key, url, kind, param) for each content part naming a file:// or http(s) URL."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for number, part in enumerate(content):
            part_type = part.get("type") if isinstance(part, dict) else None
            key = _URL_PARTS.get(part_type) if isinstance(part_type, str) else None  # a list is unhashable
            if key is None:
                continue
            media = part.get(key)
            url = media.get("url") if isinstance(media, dict) else media
            if isinstance(url, str) and url.partition(":")[0].lower() in ("http", "https", "file"):
                param = f"messages[{index}].content[{number}].{key}"
                yield part, key, url, _KIND[part_type], param


async def _inline(url: str, kind: str, param: str, policy: MediaPolicy) -> str:
    shown = url if len(url) <= _SHOWN_URL else url[:_SHOWN_URL] + "..."
    try:
        async with asyncio.timeout(policy.timeout):
            if url[:5].lower() == "file:":
                data, declared = await _read_local(url, policy)
            else:
                data, declared = await _fetch(url, policy)
    except _RefusalError as exc:
        raise BadRequestError(f"{kind} URL {shown} is refused: {exc}", param) from None
    except TimeoutError:
        raise BadRequestError(
            f"{kind} URL {shown} could not be fetched: no answer within {policy.timeout:g} s "
            "(NIMCTL_MEDIA_FETCH_TIMEOUT)",
            param,
        ) from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise BadRequestError(
            f"{kind} URL {shown} could not be fetched: {exc or type(exc).__name__}", param
        ) from None
    return _data_url(data, declared, kind, url, shown, param, policy)


def _data_url(
    data: bytes, declared: str | None, kind: str, url: str, shown: str, param: str, policy: MediaPolicy
) -> str:
    if kind == "image":
        media_type = sniff_media_type(data)
        if media_type is None:
            kinds = ", ".join(supported.removeprefix("image/").upper() for supported in SUPPORTED_TYPES)
            raise BadRequestError(f"image URL {shown} does not hold a {kinds} image", param)
        size = image_size(data)
        if size is not None and size[0] * size[1] > policy.max_pixels:
            width, height = size
            raise BadRequestError(
                f"image URL {shown} is {width}x{height} ({width * height} pixels), more than the "
                f"{policy.max_pixels} this server accepts (NIMCTL_MAX_IMAGE_PIXELS): scale it down",
                param,
            )
    elif declared and declared.startswith(f"{kind}/"):
        media_type = declared
    else:
        media_type = mimetypes.guess_type(urlsplit(url).path)[0] or "application/octet-stream"
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def _too_large(policy: MediaPolicy) -> _RefusalError:
    return _RefusalError(f"it holds more than {policy.max_bytes} bytes (NIMCTL_MEDIA_MAX_MB)")


async def _fetch(text: str, policy: MediaPolicy) -> tuple[bytes, str | None]:
    if not policy.remote:
        raise _RefusalError(
            "this server fetches no remote media (NIMCTL_MEDIA_URLS=none): send it inline as a data: URL"
        )
    try:
        # yarl parses the URL for the check, and aiohttp connects with the same parse: no differential.
        url = URL(text)
    except ValueError as exc:
        raise _RefusalError(f"it is not a valid URL ({exc})") from None
    host = (url.raw_host or "").lower().rstrip(".")
    if url.scheme not in ("http", "https") or not host or url.port is None:
        raise _RefusalError("it is not a valid http(s) URL with a host")
    if policy.allowed_domains and host not in policy.allowed_domains:
        raise _RefusalError(f"{host} is not in NIMCTL_ALLOWED_MEDIA_DOMAINS")
    results = await resolve_checked(host, url.port, policy)
    # A literal address is connected to as it is (aiohttp asks no resolver): resolve_checked checked it.
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(results), use_dns_cache=False, force_close=True, limit=1
    )
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # a gzip bomb would pass the byte cap compressed
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,  # a proxy would connect where the check did not look
    ) as session:
        headers = {"Accept-Encoding": "identity", "User-Agent": "nimctl-media-fetch"}
        async with session.get(url, allow_redirects=False, headers=headers) as response:
            if 300 <= response.status < 400:
                raise _RefusalError(
                    f"it answered with a redirect (HTTP {response.status}), and redirects are not followed"
                )
            if response.status != 200:
                raise OSError(f"it answered HTTP {response.status}")
            if (response.content_length or 0) > policy.max_bytes:
                raise _too_large(policy)
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > policy.max_bytes:
                    raise _too_large(policy)  # cut while reading: the rest is never read
            return bytes(data), response.headers.get("Content-Type", "").split(";")[0].strip().lower() or None


async def _read_local(text: str, policy: MediaPolicy) -> tuple[bytes, str | None]:
    if policy.local_dir is None:
        raise _RefusalError(
            "file:// URLs are refused unless NIMCTL_MEDIA_LOCAL_DIR names a folder they may read from"
        )
    parts = urlsplit(text)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        raise _RefusalError("it is not a file:///PATH URL")
    folder = policy.local_dir
    path = Path(url2pathname(unquote(parts.path))).resolve()  # symbolic links and .. resolved first
    if folder not in path.parents:
        raise _RefusalError(f"it is outside NIMCTL_MEDIA_LOCAL_DIR ({folder})")
    return await asyncio.to_thread(_read_capped, path, policy), None


def _read_capped(path: Path, policy: MediaPolicy) -> bytes:
    if not path.is_file():
        raise OSError(f"{path} is not a file")
    with path.open("rb") as file:
        data = file.read(policy.max_bytes + 1)
    if len(data) > policy.max_bytes:
        raise _too_large(policy)
    return data
