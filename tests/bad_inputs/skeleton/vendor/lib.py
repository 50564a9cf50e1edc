"""Another module named lib.py: pushing it beside tasks/lib.py would overwrite one with the other."""


def greeting() -> str:
    return "hi"
