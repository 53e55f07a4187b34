"""Where a run's steps execute: in the run's own process (the embedded default) or on Celery
workers (`deploy/celery/`), chosen by the environment so the same code location serves both.

Training steps carry the op tag ``dagster-celery/queue: training`` (``TRAINING_OP_TAGS``), so
under Celery they land on the ``training`` queue's workers and everything else on ``default``;
without Celery the tag is inert.
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition

CELERY_QUEUE_TAG = "dagster-celery/queue"
DEFAULT_QUEUE = "default"
TRAINING_QUEUE = "training"
TRAINING_OP_TAGS = {"carsdepo/stage": "training", CELERY_QUEUE_TAG: TRAINING_QUEUE}


def executor_from_environment() -> ExecutorDefinition | None:
    """The Celery executor when ``CARSDEPO_EXECUTOR=celery`` (broker and result backend from
    ``CARSDEPO_CELERY_BROKER`` / ``CARSDEPO_CELERY_BACKEND``), else None: Dagster's default
    executor. dagster-celery is imported only here, so the embedded default never loads it.
    Untagged steps go to the ``default`` queue (dagster-celery's own default is ``dagster``),
    the queue deploy/celery's second worker listens on."""
    choice = os.environ.get("CARSDEPO_EXECUTOR", "").strip().lower()
    if choice in ("", "default", "in_process", "multiprocess"):
        return None
    if choice != "celery":
        raise ValueError(
            f"CARSDEPO_EXECUTOR={choice!r}: expected 'celery' or unset (Dagster's default)"
        )
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": os.environ.get("CARSDEPO_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
            "backend": os.environ.get("CARSDEPO_CELERY_BACKEND", "redis://127.0.0.1:6379/1"),
            "config_source": {"task_default_queue": DEFAULT_QUEUE},
        },
        name="carsdepo_celery_executor",
    )
