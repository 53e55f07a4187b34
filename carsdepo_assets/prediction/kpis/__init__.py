"""Business KPIs computed from the platform's own records, with a markdown dashboard and plots:
``collect`` reads the records, ``compute`` turns them into a ``KpiReport``, ``render`` writes
the dashboard and its plots.

Records read (all under CARSDEPO_HOME; a missing one leaves its KPIs empty, with a note):

- ``manifests/*.json``: the images the platform holds (distinct stored images of all batches);
- ``predictions/*.jsonl``: each batch's latest batch predictions;
- the latest annotation snapshot (``annotations/LATEST``): what people labelled;
- ``inference_log/``: every answer's latency (batch, cli, rest), over a window of days;
- ``reports/decisions/*.json``: the monitoring stage's retraining decisions, each a JSON object
  with an ``action`` (``monitoring.decision.Decision.to_dict()``);
- the MLflow registry: champion promotions and rollbacks (version tags
  ``carsdepo.promoted_at``, ``carsdepo.rolled_back_at``) and the test metrics ``test_AP`` /
  ``test_AP50`` that evaluation_report logged in the version's run.

Definitions:

- **automation rate** = decided by the model / (decided by the model + sent to annotators).
  An image is *decided by the model* when the champion answered it in batch predictions and no
  person labelled it: its answer stands alone. It is *sent to annotators* when a person
  labelled it in Label Studio (snapshot source ``label_studio``), whether or not the model
  answered it first. Images that arrived labelled (``import-coco``) count as neither; images
  neither answered nor labelled yet are *pending*.
- **labelled share** = labelled images (any source) / distinct images held.
- **damage-type distribution**: images per answer kind (None, scratch, dent, scratch+dent) and
  boxes per class, for the model's answers and for people's labels.
- **annotation throughput**: images labelled in Label Studio per UTC day of the winning
  annotation's last update (imported labels are not annotators' work).
- **champion AP over time**: the test AP and AP50 of each champion, from the time it became
  champion (promoted, or restored by a rollback).
- **inference latency p50/p95**: model milliseconds per image, per source and overall.
- **drift alerts**: decisions whose action is ``retrain`` or ``experiment``.
"""
