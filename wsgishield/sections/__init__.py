"""Policy sections of the layers, one module per layer.

:mod:`wsgishield.policy` composes them into :class:`~wsgishield.policy.Policy`
and re-exports every struct.
"""
