"""Test helpers for the data layer: BPS-like uint16 TIFFs, raw folders, and a faulty loopback HTTP server.

Images are tiles of the one real BPS crop (flipped, rotated, noise-perturbed) so tests see real
16-bit statistics; without the shared sample they fall back to a drawn nucleus on a camera offset.
The server binds 127.0.0.1 only and can inject the faults a flaky bucket shows: 5xx, dropped
connections, truncated bodies, slow answers and corrupted bytes.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

SHARED_REAL = Path(__file__).resolve().parents[2] / "shared" / "bps_real"
REAL_META = SHARED_REAL / "meta.csv"
REAL_TIF = SHARED_REAL / "P242_73665006707-A6_003_013_proj.tif"
SKIP_REASON = f"real BPS samples not found at {SHARED_REAL} (CI keeps shared/ beside the repository)"

_REAL_CACHE: dict[str, np.ndarray] = {}


def real_image() -> np.ndarray | None:
    if "img" not in _REAL_CACHE:
        if not REAL_TIF.is_file():
            return None
        import tifffile

        _REAL_CACHE["img"] = tifffile.imread(REAL_TIF)
    return _REAL_CACHE["img"]


def bps_like_image(seed: int, size: int = 48) -> np.ndarray:
    """A uint16 size x size crop: a perturbed tile of the real image (or a drawn nucleus if it is absent)."""
    rng = np.random.default_rng(seed)
    base = real_image()
    if base is None:
        yy, xx = np.mgrid[:size, :size]
        r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
        base = 400 + 500 * (r2 < (size / 3) ** 2) + rng.normal(0, 20, (size, size))
        return np.clip(base, 0, 65535).astype(np.uint16)
    tile = np.rot90(base, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    y = int(rng.integers(0, tile.shape[0] - size + 1))
    x = int(rng.integers(0, tile.shape[1] - size + 1))
    crop = tile[y:y + size, x:x + size].astype(np.float64)
    crop = crop * rng.uniform(0.9, 1.1) + rng.normal(0, 8, crop.shape)
    return np.clip(crop, 0, 65535).astype(np.uint16)


def tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, compression="zlib")
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bps_name(plate: int, well: str, field: int, obj: int, acquisition: str = "73665006707") -> str:
    return f"P{plate}_{acquisition}-{well}_{field:03d}_{obj:03d}_proj.tif"


#: (plate, particle, dose, hour): a miniature of the real design, one plate per condition.
SMALL_DESIGN = (
    (901, "Fe", 0.82, 4), (902, "Fe", 0.3, 4), (903, "Fe", 0.0, 4), (904, "Fe", 0.82, 48),
    (911, "X-ray", 1.0, 4), (912, "X-ray", 0.1, 4), (913, "X-ray", 0.0, 4), (914, "X-ray", 1.0, 48),
)


def design_rows(design=SMALL_DESIGN, wells=("A1", "B2", "C3"), fields=4,
                objects=3) -> list[tuple[str, float, str, int]]:
    """(filename, dose, particle, hour) for every plate x well x field x object."""
    rows = []
    for plate, particle, dose, hour in design:
        for well in wells:
            for field in range(1, fields + 1):
                for obj in range(1, objects + 1):
                    rows.append((bps_name(plate, well, field, obj), dose, particle, hour))
    return rows


def write_meta(path: Path, rows, header: str = "filename,dose_Gy,particle_type,hr_post_exposure") -> None:
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_raw_folder(root: Path, rows=None, *, size: int = 48, masks: bool = False) -> list[tuple]:
    """A flat raw folder (meta.csv + one uint16 TIFF per row), like `aws s3 sync` gives."""
    rows = design_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(exist_ok=True)
    for index, (name, *_rest) in enumerate(rows):
        image = bps_like_image(index, size)
        (root / name).write_bytes(tiff_bytes(image))
        if masks:
            mask = (image > np.percentile(image, 60)).astype(np.uint8)
            (root / "masks" / name).write_bytes(tiff_bytes(mask))
    write_meta(root / "meta.csv", rows)
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- loopback server


class FaultyServer:
    """Serves `files` under `/Microscopy/train/` on 127.0.0.1 with scripted faults.

    `faults[name]` is a list of actions consumed one per GET, then normal service resumes;
    `always[name]` is an action applied to every GET. Actions: "500", "503", "404", "drop"
    (half the body, then the connection closes), "truncate" (most of the body, then close),
    "slow" (sleep `slow_seconds` before answering), "corrupt" (right length and ETag, wrong bytes).
    """

    prefix = "/Microscopy/train/"

    def __init__(self, files: dict[str, bytes], *, delay: float = 0.0, slow_seconds: float = 1.0, etag: bool = True):
        self.files = dict(files)
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.always: dict[str, str] = {}
        self.delay = delay
        self.slow_seconds = slow_seconds
        self.etag = etag
        self.log: list[tuple[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def gets(self, name: str | None = None) -> list[str] | int:
        names = [path for method, path in self.log if method == "GET"]
        return names if name is None else names.count(name)

    def get_counts(self) -> Counter:
        return Counter(path for method, path in self.log if method == "GET")

    def __enter__(self) -> "FaultyServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _name(self) -> str:
                path = unquote(urlparse(self.path).path)
                return path[len(owner.prefix):] if path.startswith(owner.prefix) else path

            def do_HEAD(self):
                name = self._name()
                with owner._lock:
                    owner.log.append(("HEAD", name))
                if owner.delay:
                    time.sleep(owner.delay)
                body = owner.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def do_GET(self):
                name = self._name()
                with owner._lock:
                    owner.log.append(("GET", name))
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                    action = owner.faults[name].pop(0) if owner.faults.get(name) else owner.always.get(name, "ok")
                try:
                    self._serve(name, action)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with owner._lock:
                        owner.in_flight -= 1

            def _serve(self, name: str, action: str) -> None:
                if owner.delay:
                    time.sleep(owner.delay)
                if action == "slow":
                    time.sleep(owner.slow_seconds)
                if action in ("500", "503", "404"):
                    self.send_error(int(action))
                    return
                body = owner.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                if owner.etag:
                    self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
                self.end_headers()
                if action == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if action == "truncate":
                    self.wfile.write(body[:-7])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if action == "corrupt":
                    body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):  # client timeouts close sockets mid-answer
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
