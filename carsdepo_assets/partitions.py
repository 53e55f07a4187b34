"""Partitions shared by every per-batch asset: one dynamic partition per arriving batch."""

from dagster import DynamicPartitionsDefinition

BATCHES_PARTITIONS_NAME = "batches"
batch_partitions = DynamicPartitionsDefinition(name=BATCHES_PARTITIONS_NAME)
