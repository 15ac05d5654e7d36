"""derivgen: neural-network equations in a paper's notation -> verified, fast code.

The import name is ``symbolic``; the distribution and the command are ``derivgen``.
(An unrelated package on PyPI is also called ``symbolic``: install ``derivgen``.)
"""

__version__ = "0.1.0"
