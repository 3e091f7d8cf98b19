"""The simulated GPU fleet: Debian hosts in Docker with a simulated NVIDIA stack (``ms4fleet sim``).

Nothing outside this package imports it. Keep this module free of imports: parts of the package
(``nvsim``, ``standin``) are copied onto sim hosts and into the stand-in image, where only the
standard library exists.
"""
