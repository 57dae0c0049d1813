"""3-layer linear self-attention (LSA), 1 head(s), width 21, no MLP trained with `iclbench train`; the command and training log are in log.json."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'lsa-3l-noisy-pool4096'
