"""The baseline algorithms, each an `iclbench.Model`, installed as `iclbench.baselines`.

`REGISTRY` maps the names `iclbench run --model NAME` accepts to "module:Class".
"""

REGISTRY: dict[str, str] = {
    "zero": "zero:Zero",
    "ridge": "ridge:Ridge",
    "ols": "ridge:LeastSquares",
    "averaging": "averaging:Averaging",
    "3-nn": "knn:NearestNeighbours",
    "tree": "trees:Tree",
    "tree-depth4": "trees:TreeDepth4",
    "boosting": "trees:Boosting",
    "relu-nn": "network:ReluNetwork",
    "gd": "gd:GradientDescent",
    "newton": "newton:Newton",
    "newton3": "newton:Newton3",
    "ista": "proximal:ISTA",
    "fista": "proximal:FISTA",
    "lasso-exact": "proximal:LassoExact",
    "lista": "lista:LISTA",
    "lista-cp": "lista:LISTACP",
    "alista": "lista:ALISTA",
    "logistic-optimum": "oracles:LogisticOptimum",
    "gp-posterior": "oracles:GPPosterior",
    "garg-bayes": "garg_bayes:GargBayes",
    "true-w": "oracles:TrueW",
    **{
        f"{name}@{k}": f"budgeted:{name.capitalize()}At{k}"
        for name in ("gd", "ista", "fista", "newton", "newton3")
        for k in (1, 4, 16)
    },
    "noise-oracle": "oracles:NoiseOracle",
    "select-bayes": "selection:SelectBayes",
    "ridge-fixed": "selection:RidgeFixed",
}
