"""An image the chat template cannot place in the prompt is the request's fault: a 400, not a 502.

The fuzz gate found it: an image in a message whose role the template renders without its
placeholder makes vLLM fail the prompt replacement with a 500.
"""

from __future__ import annotations

import httpx
import pytest

from tests.server_process import ServerProcess

GIF = "data:image/png;base64,R0lGODdhDAAJAIEAAArIWgAAAAAAAAAAACwAAAAADAAJAAAIFAABCBxIsKDBgwgTKlzIsKHDgQEBADs="


@pytest.mark.engine
def test_an_image_the_template_drops_is_a_400(nim_server: ServerProcess) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "image_url", "image_url": {"url": GIF}}]},
        ],
        "max_tokens": 1,
    }
    answer = httpx.post(f"{nim_server.url}/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 400, answer.text  # the tiny VLM's template renders developer text only
    assert "chat template" in answer.json()["error"]["message"]
