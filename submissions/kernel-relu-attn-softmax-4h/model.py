"""4-layer softmax-attention linear transformer, 4 head(s), width 6, no MLP trained with `iclbench train`; the command and training log are in log.json."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'kernel-relu-attn-softmax-4h'
