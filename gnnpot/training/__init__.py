"""Training: the LightningModule, the loss, metrics that reduce across processes, EMA, plots."""

from gnnpot.training.ema import EMA
from gnnpot.training.loss import PotentialLoss
from gnnpot.training.metrics import METRIC_UNITS, ErrorMetric, PotentialMetrics
from gnnpot.training.module import PotentialModule

__all__ = ["EMA", "METRIC_UNITS", "ErrorMetric", "PotentialLoss", "PotentialMetrics", "PotentialModule"]
