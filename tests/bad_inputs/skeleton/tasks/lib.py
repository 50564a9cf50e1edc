"""A module imported by hello.py, pushed beside it (declared under files:)."""


def greeting() -> str:
    return "hello"
