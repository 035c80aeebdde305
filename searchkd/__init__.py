"""searchkd: search a student architecture with the teacher in the loop."""

__version__ = "0.1.0"


def load_student(path, weights: bool = True):
    """Rebuild an exported student; see :func:`searchkd.export.load_student`."""
    from searchkd.export import load_student as _load

    return _load(path, weights)


__all__ = ["__version__", "load_student"]
