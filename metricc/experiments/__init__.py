"""Train models with compiled metric losses and compare them with BCE: ``metricc experiment``.

An optional extra (``pip install 'metricc[experiments]'``: scikit-learn, matplotlib);
the core package never imports it. One concept per module: ``datasets``, ``models``,
``losses``, ``settings`` (the AnyLoss paper's defaults), ``training``, ``evaluation``
(scikit-learn metrics of hard predictions), ``protocol`` (cross-validation),
``report`` (tables, plot, timing) and ``runner`` (the command line).
"""
