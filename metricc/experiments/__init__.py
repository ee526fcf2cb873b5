"""Train models with compiled metric losses and compare them with baselines: ``metricc experiment``.

An optional extra (``pip install 'metricc[experiments]'``: scikit-learn, matplotlib,
scipy); the core package never imports it. One concept per module: ``datasets``,
``models``, ``losses`` (baselines, compiled losses, users' expressions, recipes),
``settings`` (the AnyLoss paper's defaults), ``training``, ``evaluation`` (scikit-learn
metrics of hard predictions, their vectorised forms, the tuned threshold), ``protocol``
(cross-validation), ``report`` (tables, plots, timing), ``summary`` (wins/ties/losses
across datasets) and ``runner`` (the command line).
"""
