"""The algorithms shipped with paracel, installed as ``paracel.algorithms``.

Each module is one ``paralg`` subclass (plus its update functions); a config names it as
``"paracel.algorithms.MODULE:Class"``.
"""
