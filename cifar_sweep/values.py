"""What kind of value a key holds, as every check tests it: a bool is neither an int nor a number
here (YAML's `true` would pass as 1)."""


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
