"""``carsdepo demo`` (``make demo``): the whole loop on synthetic data and embedded defaults.

Each step runs real Dagster jobs in the local instance (visible afterwards in ``make dev``),
against a real Label Studio and a real MLflow store under CARSDEPO_HOME, and prints what it did.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from carsdepo_assets.state import StateLayout


@dataclass(frozen=True)
class DemoPlan:
    images: int
    seed: int

    def batch(self, purpose: str) -> str:
        return f"demo-{purpose}-s{self.seed}"


def say(message: str) -> None:
    print(message, flush=True)


def step(title: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """Prints a header before and the elapsed time after a demo step."""

    def wrap(function: Callable[..., object]) -> Callable[..., object]:
        def run(*args, **kwargs):
            say(f"\n==> {title}")
            started = time.perf_counter()
            result = function(*args, **kwargs)
            say(f"    done in {time.perf_counter() - started:.0f}s")
            return result

        return run

    return wrap


def synthetic_folder(layout: StateLayout, batch: str) -> Path:
    return layout.root / "synthetic" / batch


@step("Generating a synthetic batch of car-panel photos")
def generate_batch(layout: StateLayout, plan: DemoPlan, batch: str, lighting: str,
                   seed_offset: int) -> Path:
    from carsdepo_assets.synth import generate_dataset

    out = synthetic_folder(layout, batch)
    result = generate_dataset(out, n_images=plan.images, seed=plan.seed + seed_offset,
                              lighting=lighting)
    say(f"    {result.n_images} photos ({result.n_clean} undamaged, lighting {lighting}) "
        f"in {result.images_dir}")
    return out


@step("Ingesting the batch through Dagster (raw_images)")
def ingest(batch: str, folder: Path) -> None:
    from carsdepo_assets.images.summary import format_summary
    from carsdepo_assets.runner import ingest_batch_through_dagster

    manifest = ingest_batch_through_dagster(folder / "images", batch)
    say("    " + format_summary(manifest).replace("\n", "\n    "))


def run_demo(images: int, seed: int) -> int:
    from carsdepo_assets.instance import prepare_dagster_home
    from carsdepo_assets.runner import RunFailed

    layout = StateLayout.from_env().ensure()
    prepare_dagster_home(layout)
    plan = DemoPlan(images=images, seed=seed)
    say(f"carsdepo demo: state in {layout.root}")
    try:
        batch = plan.batch("train")
        folder = generate_batch(layout, plan, batch, "normal", 0)
        ingest(batch, folder)
    except RunFailed as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    say("\nDemo finished. Browse the runs and assets with `make dev` (http://127.0.0.1:3000).")
    return 0
