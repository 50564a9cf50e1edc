"""A task for the bad-inputs corpus: it only has to exist and be valid Python."""

import lib

if __name__ == "__main__":
    print(lib.greeting())
