"""Training (docs/architecture.md): the loop, its config, losses, checkpoints and trackers.

The package is callable so that `from personalign import train` is the training function whether or
not this package has been imported: `personalign.train(cfg, **settings)` is `loop.train_with`.
"""
import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, cfg=None, /, **settings):
        from personalign.train.loop import train_with

        return train_with(cfg, **settings)


sys.modules[__name__].__class__ = _CallableModule
