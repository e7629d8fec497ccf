"""Locust users for Skyburst, for people who already load-test with Locust.

Each user is a camera: it posts an image to the JSON API (CloudDetect's shape,
`{"id": ..., "image": <base64>}` to `POST /api/detect`), checks the answer, waits 0.5-1.5 s and
sends the next. Images come from a folder, in name order, round robin.

    locust -f examples/locustfile.py --host http://127.0.0.1:8080 [--images DIR] [--bearer-token T]
    locust -f examples/locustfile.py --host http://127.0.0.1:8080 --headless -u 8 -r 1 -t 60s

--images defaults to $SKYBURST_IMAGES, else ~/.cache/skyburst/images (bus.jpg and zidane.jpg,
fetched by scripts/fetch-assets.sh). --bearer-token defaults to $BEARER_TOKEN, for a service
with frontend.tokens. scripts/install-locust.sh installs the pinned Locust into a venv.
"""

import base64
import itertools
import os
import pathlib
import threading
import uuid

from locust import HttpUser, between, events, task

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def default_images():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("SKYBURST_IMAGES") or os.path.join(cache, "skyburst", "images")


@events.init_command_line_parser.add_listener
def add_arguments(parser):
    parser.add_argument("--images", default=default_images(), help="folder of images to send, round robin")
    parser.add_argument(
        "--bearer-token", default=os.environ.get("BEARER_TOKEN", ""), help="token for frontend.tokens"
    )


class Images:
    """The folder's images as (file name, base64), handed out round robin across users."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()
        self.order = None

    def load(self, folder):
        folder = pathlib.Path(folder)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise SystemExit(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}; pass --images DIR")
        self.items = [(p.name, base64.b64encode(p.read_bytes()).decode("ascii")) for p in files]
        self.order = itertools.cycle(range(len(self.items)))

    def next(self):
        with self.lock:
            return self.items[next(self.order)]


IMAGES = Images()


@events.test_start.add_listener
def load_images(environment, **_kwargs):
    IMAGES.load(environment.parsed_options.images)


class Camera(HttpUser):
    wait_time = between(0.5, 1.5)

    @task
    def detect(self):
        name, image = IMAGES.next()
        client_id = str(uuid.uuid4())
        token = self.environment.parsed_options.bearer_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"id": client_id, "image": image}
        with self.client.post(
            "/api/detect", json=body, headers=headers, name="/api/detect", catch_response=True
        ) as response:
            if response.status_code != 200:
                # 202 means the answer took longer than frontend.wait_seconds: not an answer.
                response.failure(f"{name}: HTTP {response.status_code}: {response.text[:200]}")
                return
            answer = response.json()
            if answer.get("id") != client_id or not isinstance(answer.get("objects"), list):
                response.failure(f"{name}: the answer is not this request's result: {response.text[:200]}")
