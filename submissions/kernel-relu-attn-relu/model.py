"""4-layer relu-attention linear transformer, 1 head(s), width 6, no MLP, trained with `iclbench train` (command in submission.yaml)."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'kernel-relu-attn-relu'
