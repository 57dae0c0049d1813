"""8-layer proximal-step transformer: a state token updated by linear attention over the context, 1 head(s), then a ReLU MLP of width 80 trained with `iclbench train`; the command and training log are in log.json."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = 'prox-8l-lasso-random'
