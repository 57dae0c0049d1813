"""2-layer causal linear self-attention on (x, y) tokens, 1 head(s), labels of dimension 10, no MLP trained with `iclbench train`; the command and training log are in log.json."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'causal-lsa-2l-ar-uniform'
