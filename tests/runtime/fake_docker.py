"""A stand-in for the docker SDK's client in the runtime layer's unit tests.

Containers, images and the classic builder's build stream, held in memory; each part does
only what nimctl calls. ``FakeDocker.closed`` tells whether nimctl let go of its connection.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

from docker.errors import APIError, ImageNotFound, NotFound

from nimctl.contract import MANAGED_LABEL, MODEL_LABEL

RFC3339_START = "2030-01-01T00:00:00.000000000Z"


class FakeContainer:
    def __init__(
        self,
        name: str,
        *,
        status: str = "running",
        managed: bool = True,
        log: bytes = b"",
        started_at: str = RFC3339_START,
    ) -> None:
        self.name = name
        self.short_id = f"{abs(hash(name)) % 16**12:012x}"
        self.labels = {MANAGED_LABEL: "true", MODEL_LABEL: "tiny-vlm"} if managed else {}
        self.status = status
        self.exit_code = 0
        self.log = log
        self.started_at = started_at
        self.removed = False
        self.stopped_with: int | None = None
        self.created_with: dict[str, Any] = {}  # containers.create's keywords, less name and labels
        # Failures to provoke: called at the start of the method of that name.
        self.fail: dict[str, Callable[[], None]] = {}

    @property
    def attrs(self) -> dict[str, Any]:
        return {"State": {"Status": self.status, "ExitCode": self.exit_code, "StartedAt": self.started_at}}

    def _check(self, method: str) -> None:
        if method in self.fail:
            self.fail[method]()
        if self.removed:
            raise NotFound(f"No such container: {self.name}")

    def reload(self) -> None:
        self._check("reload")

    def start(self) -> None:
        self._check("start")
        self.status = "running"

    def stop(self, timeout: int) -> None:
        self._check("stop")
        self.stopped_with, self.status = timeout, "exited"

    def remove(self, force: bool = False) -> None:
        self._check("remove")
        self.removed = True

    def logs(self, *, tail: Any = "all", stream: bool = False, follow: bool = False, **_: Any) -> Any:
        self._check("logs")
        lines = self.log.splitlines(keepends=True)
        data = b"".join(lines if tail == "all" else lines[len(lines) - int(tail) :])
        if stream:  # in pieces that split lines, as Docker's stream does
            return iter([data[i : i + 5] for i in range(0, len(data), 5)])
        return data


class FakeContainers:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.all = containers
        self.fail_list: Callable[[], None] | None = None

    def list(self, all: bool = False, filters: dict[str, Any] | None = None, **_: Any) -> list[FakeContainer]:
        if self.fail_list is not None:
            self.fail_list()
        wanted = (filters or {}).get("label", [])
        wanted = [wanted] if isinstance(wanted, str) else wanted
        pairs = [label.partition("=")[::2] for label in wanted]
        return [
            c
            for c in self.all
            if not c.removed and (all or c.status == "running") and all_match(c.labels, pairs)
        ]

    def get(self, name: str) -> FakeContainer:
        for container in self.all:
            if container.name == name and not container.removed:
                return container
        raise NotFound(f"No such container: {name}")

    def create(self, *, name: str, labels: dict[str, str], **kwargs: Any) -> FakeContainer:
        """As the daemon does: a name taken (by a container not removed) is a 409."""
        if any(c.name == name and not c.removed for c in self.all):
            api_error(f'Conflict. The container name "/{name}" is already in use', 409)()
        container = FakeContainer(name, status="created")
        container.labels = dict(labels)
        container.created_with = kwargs
        self.all.append(container)
        return container


def all_match(labels: dict[str, str], pairs: list[tuple[str, str]]) -> bool:
    return all(labels.get(key) == value for key, value in pairs)


class FakeNetwork:
    def __init__(self, networks: FakeNetworks, name: str, labels: dict[str, str], driver: str) -> None:
        self.networks = networks
        self.name = name
        self.driver = driver
        self.attrs = {"Name": name, "Labels": labels, "Driver": driver}

    def remove(self) -> None:
        self.networks.all.remove(self)


class FakeNetworks:
    def __init__(self) -> None:
        self.all: list[FakeNetwork] = []

    def get(self, name: str) -> FakeNetwork:
        for network in self.all:
            if network.name == name:
                return network
        raise NotFound(f"network {name} not found")

    def create(
        self, name: str, *, driver: str = "bridge", labels: dict[str, str] | None = None
    ) -> FakeNetwork:
        network = FakeNetwork(self, name, dict(labels or {}), driver)
        self.all.append(network)
        return network


class FakeImage:
    def __init__(self, image_id: str, tags: list[str], labels: dict[str, str] | None = None) -> None:
        self.id = image_id
        self.tags = tags
        self.labels = labels or {}


class FakeImages:
    def __init__(self) -> None:
        self.images: list[FakeImage] = []
        self.removed: list[str] = []

    def add(self, tag: str, labels: dict[str, str] | None = None) -> FakeImage:
        for image in self.images:  # a tag moves to the new image
            if tag in image.tags:
                image.tags.remove(tag)
        image = FakeImage(f"sha256:{len(self.images) + 1:064x}", [tag], labels)
        self.images.append(image)
        return image

    def get(self, name: str) -> FakeImage:
        for image in self.images:
            if name in image.tags or name == image.id or name == image.id[7:19]:
                return image
        raise ImageNotFound(f"No such image: {name}")

    def list(self, name: str | None = None, filters: dict[str, str] | None = None) -> list[FakeImage]:
        found = [image for image in self.images if image.tags]
        if filters and "label" in filters:
            key, _, value = filters["label"].partition("=")
            found = [image for image in found if image.labels.get(key) == value]
        return found

    def remove(self, image: str, **_: Any) -> None:
        try:
            found = self.get(image)
        except ImageNotFound:
            return
        self.removed.append(image)
        self.images.remove(found)


class FakeAPI:
    """The classic builder's stream: a ``Step N/M`` line per instruction and a layer id each."""

    def __init__(self, images: FakeImages) -> None:
        self.images = images
        self.builds: list[dict[str, Any]] = []
        self.fail_on: str | None = None  # an instruction prefix whose step fails, e.g. "RUN"

    def build(
        self, *, fileobj: Any, tag: str, labels: dict[str, str], **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        with tarfile.open(fileobj=io.BytesIO(fileobj.read())) as tar:
            member = tar.extractfile("Dockerfile")
            assert member is not None
            dockerfile = member.read().decode()
        self.builds.append({"tag": tag, "labels": labels, **kwargs})
        instructions = _instructions(dockerfile)
        for number, instruction in enumerate(instructions, 1):
            yield {"stream": f"Step {number}/{len(instructions)} : {instruction}\n"}
            if instruction.startswith("FROM"):
                yield {"stream": " ---> 0123456789ab\n"}
                continue
            if self.fail_on and instruction.startswith(self.fail_on):
                yield {"stream": " ---> Running in 3f3f3f3f3f3f\n"}
                yield {"stream": "E: no such package: nimctl-test-missing\n"}
                message = f"The command '/bin/sh -c {instruction[4:30]}' returned a non-zero code: 100"
                yield {"error": message, "errorDetail": {"code": 100, "message": message}}
                return
            cached = instruction.startswith("COPY profiles/")
            yield {"stream": " ---> Using cache\n" if cached else " ---> Running in 3f3f3f3f3f3f\n"}
            yield {"stream": f" ---> {number:012x}\n"}
        self.images.add(tag, labels)
        yield {"stream": f"Successfully tagged {tag}\n"}


def _instructions(dockerfile: str) -> list[str]:
    joined = dockerfile.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


class FakeDocker:
    """Stands in for a DockerClient whose daemon answered; records whether it was closed."""

    def __init__(self, containers: list[FakeContainer] | None = None) -> None:
        self.containers = FakeContainers(containers or [])
        self.networks = FakeNetworks()
        self.images = FakeImages()
        self.api = FakeAPI(self.images)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def api_error(message: str, status: int = 500) -> Callable[[], None]:
    """A failure the daemon answers (``fail`` entries): an APIError with that status."""

    class Response:
        status_code = status
        reason = "Internal Server Error"

    def raise_it() -> None:
        raise APIError(message, response=Response(), explanation=message)  # type: ignore[arg-type]

    return raise_it


def raising(exc: BaseException) -> Callable[[], None]:
    """A failure of any kind (``fail`` entries): ``exc`` itself."""

    def raise_it() -> None:
        raise exc

    return raise_it
