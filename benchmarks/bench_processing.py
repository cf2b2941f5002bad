"""Processing cost as a ratio to one ``image.sum()`` of the same uint16 image, and simulation frame rate.

Run: ``.venv/bin/python benchmarks/bench_processing.py [--repeat N]``. Prints a markdown table (min / median).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from cam_server.processing.default import preprocess_frame, process_image
from cam_server.processing.simulation import SimulatedBeam

SIZES = ((640, 480), (1280, 1024), (2560, 2160))
CASES = {
    "default": {},
    "+good region+slices": {"image_good_region": {"threshold": 0.3, "gfscale": 1.8},
                            "image_slices": {"number_of_slices": 5, "scale": 2.0, "orientation": "vertical"}},
    "+background+threshold": {"image_background_enable": True, "image_threshold": 100.5},
}


def _time_per_call(func, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        func()
    return (time.perf_counter() - start) / number


def _measure(func, repeat: int, number: int) -> list[float]:
    func()  # warm up
    return [_time_per_call(func, number) for _ in range(repeat)]


def bench_processing(repeat: int) -> list[str]:
    rows = ["| size | image.sum() µs | " + " | ".join(f"{name} ratio min / median" for name in CASES) + " |",
            "|---|---|" + "---|" * len(CASES)]
    for width, height in SIZES:
        image = SimulatedBeam(width, height, seed=1).next_frame()
        image.flags.writeable = False  # as received from the stream
        background = SimulatedBeam(width, height, image_type="raw", seed=2).next_frame() // 2
        x_axis = np.arange(width, dtype=np.float32)
        y_axis = np.arange(height, dtype=np.float32)
        number = max(3, int(2e7 // (width * height)))
        base = _measure(image.sum, repeat, number * 4)
        base_min = min(base)
        cells = []
        for params in CASES.values():
            def run(params: dict = params, image: np.ndarray = image, x_axis: np.ndarray = x_axis,
                    y_axis: np.ndarray = y_axis, background: np.ndarray = background) -> None:
                img, xa, ya = preprocess_frame(image, x_axis, y_axis, params, background)
                process_image(img, 1, (0, 0), xa, ya, params)
            times = _measure(run, repeat, number)
            cells.append(f"{min(times) / base_min:.2f} / {statistics.median(times) / statistics.median(base):.2f}")
        rows.append(f"| {width}x{height} | {base_min * 1e6:.0f} | " + " | ".join(cells) + " |")
    return rows


def bench_simulation(repeat: int) -> list[str]:
    rows = ["| size | frame ms min / median | CPU ms / frame | max rate (Hz) |", "|---|---|---|---|"]
    for width, height in ((1280, 960), (2560, 2160)):
        sim = SimulatedBeam(width, height, seed=3)
        walls, cpus = [], []
        sim.next_frame()
        for _ in range(repeat):
            n = 20
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                sim.next_frame()
            walls.append((time.perf_counter() - wall) / n)
            cpus.append((time.process_time() - cpu) / n)
        rows.append(f"| {width}x{height} | {min(walls) * 1e3:.2f} / {statistics.median(walls) * 1e3:.2f} | "
                    f"{statistics.median(cpus) * 1e3:.2f} | {1 / min(walls):.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("\n".join(bench_processing(args.repeat)))  # noqa: T201 - CLI output
    print()
    print("\n".join(bench_simulation(args.repeat)))


if __name__ == "__main__":
    main()
